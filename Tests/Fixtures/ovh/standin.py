#!/usr/bin/env python3
"""A stand-in for the OVHcloud API v1 (VPS snapshots), for nodeagent's tests.

It checks every call as OVHcloud documents it: X-Ovh-Application, X-Ovh-Consumer,
X-Ovh-Timestamp within 30 s of its own clock, and X-Ovh-Signature =
"$1$" + sha1_hex(AS + "+" + CK + "+" + METHOD + "+" + FULL_URL + "+" + BODY + "+" + TS)
(python-ovh, ovh/client.py). Wrong credentials get 403 with OVHcloud's message and errorCode.
A VPS keeps one snapshot; deleting and creating are tasks that finish after two polls.

usage: standin.py PORT APPLICATION_KEY APPLICATION_SECRET CONSUMER_KEY SERVICE_NAME LOG [POLLS]
(POLLS: how many polls of a task until it is done; 2 by default)
"""
import hashlib, http.server, json, sys, threading, time

port, AK, AS, CK, SERVICE, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
POLLS = int(sys.argv[7]) if len(sys.argv) > 7 else 2
lock = threading.Lock()
state = {"snapshot": None, "tasks": {}, "next": 1000, "created": 0, "deleted": 0, "refuse": None}


def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


class H(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Ovh-QueryID", "EU.ext-test.%d" % time.time_ns())
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        path = self.path
        log("%s %s %s" % (self.command, path, body))
        if path == "/_state":  # the test's own view, unsigned
            with lock:
                return self.reply(200, {k: state[k] for k in ("snapshot", "created", "deleted")})
        if path.startswith("/_refuse"):  # the test makes the next create fail: /_refuse?quota
            with lock:
                state["refuse"] = path.split("?", 1)[1] if "?" in path else None
            return self.reply(200, {})
        if path == "/1.0/auth/time" and self.command == "GET":
            return self.reply(200, int(time.time()))
        if self.headers.get("X-Ovh-Application") != AK:
            return self.reply(403, {"errorCode": "INVALID_KEY", "message": "Invalid application key"})
        if self.headers.get("X-Ovh-Consumer") != CK:
            return self.reply(403, {"errorCode": "INVALID_CREDENTIAL", "message": "This credential does not exist"})
        ts = self.headers.get("X-Ovh-Timestamp", "")
        if not ts.isdigit() or abs(int(ts) - time.time()) > 30:
            return self.reply(400, {"errorCode": "QUERY_TIME_OUT", "message": "Query out of time"})
        url = "http://127.0.0.1:%d%s" % (port, path)
        expected = "$1$" + hashlib.sha1("+".join([AS, CK, self.command, url, body, ts]).encode()).hexdigest()
        if self.headers.get("X-Ovh-Signature") != expected:
            return self.reply(400, {"errorCode": "INVALID_SIGNATURE", "message": "Invalid signature"})
        base = "/1.0/vps/%s" % SERVICE
        if not path.startswith(base + "/"):
            return self.reply(404, {"class": "Client::NotFound", "message": "The requested object (serviceName = %s) does not exist" % path.split("/")[3]})
        rest = path[len(base):]
        with lock:
            running = [t for t in state["tasks"].values() if t["state"] != "done"]
            if rest == "/snapshot" and self.command == "GET":
                if state["snapshot"] is None:
                    return self.reply(404, {"class": "Client::NotFound", "message": "The requested object (snapshot) does not exist"})
                return self.reply(200, state["snapshot"])
            if rest == "/snapshot" and self.command == "DELETE":
                if state["snapshot"] is None:
                    return self.reply(404, {"class": "Client::NotFound", "message": "The requested object (snapshot) does not exist"})
                if running:
                    return self.reply(409, {"class": "Client::Conflict", "message": "A task is already running on this VPS"})
                return self.reply(200, self.task("deleteSnapshot", None))
            if rest == "/createSnapshot" and self.command == "POST":
                if state["refuse"] == "quota":
                    state["refuse"] = None
                    return self.reply(403, {"class": "Client::Forbidden", "message": "You have reached the maximum number of snapshots for this VPS"})
                if running:
                    return self.reply(409, {"class": "Client::Conflict", "message": "A task is already running on this VPS"})
                if state["snapshot"] is not None:
                    return self.reply(400, {"class": "Client::BadRequest", "message": "A snapshot already exists for this VPS"})
                description = (json.loads(body) if body else {}).get("description", "")
                return self.reply(200, self.task("createSnapshot", description))
            if rest.startswith("/tasks/") and self.command == "GET":
                t = state["tasks"].get(rest[len("/tasks/"):])
                if t is None:
                    return self.reply(404, {"class": "Client::NotFound", "message": "The requested object (id) does not exist"})
                t["polls"] += 1
                if t["state"] != "done":
                    t["state"] = "doing" if t["polls"] < POLLS else "done"
                    t["progress"] = 50 if t["state"] == "doing" else 100
                    if t["state"] == "done":
                        if t["type"] == "deleteSnapshot":
                            state["snapshot"] = None
                            state["deleted"] += 1
                        else:
                            state["created"] += 1
                            state["snapshot"] = {"id": "snap-%d" % state["created"], "description": t["description"],
                                                 "creationDate": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "region": "GRA"}
                return self.reply(200, {k: t[k] for k in ("id", "type", "state", "progress", "date")})
        return self.reply(404, {"class": "Client::NotFound", "message": "Got an invalid (or empty) URL"})

    def task(self, kind, description):
        state["next"] += 1
        t = {"id": state["next"], "type": kind, "state": "todo", "progress": 0, "polls": 0, "description": description,
             "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
        state["tasks"][str(t["id"])] = t
        return {k: t[k] for k in ("id", "type", "state", "progress", "date")}

    do_GET = do_POST = do_DELETE = handle_any

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
