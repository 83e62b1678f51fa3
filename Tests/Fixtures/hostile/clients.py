#!/usr/bin/env python3
"""Hostile HTTP clients against nodeagent's status server, with a good client timing /status
throughout. Prints one JSON object with what each attack got and the good client's latencies.

usage: clients.py HOST PORT [SEED [FUZZ_REQUESTS]]

Besides the named attacks, FUZZ_REQUESTS (default 2000) requests made by mutating valid ones
(seeded by SEED): each on its own connection, half-closed after sending so that an incomplete
request ends at once. Their status lines are counted; a 5xx or anything that is not an HTTP
status line is listed.
"""
import random
import json
import socket
import sys
import threading
import time

host, port = sys.argv[1], int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
fuzz_requests = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
result = {}


# The Host header names the server as a client on the VPN would (the server answers only to
# its own address): every request below is rewritten to carry it.
host_header = b"Host: " + ("%s:%d" % (host, port)).encode() + b"\r\n"


def connect(source=None):
    s = socket.create_connection((host, port), timeout=10, source_address=(source, 0) if source else None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def status_line(s):
    s.settimeout(10)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return line or "(closed)"


def request(raw, source=None):
    raw = raw.replace(b"Host: x\r\n", host_header)
    s = connect(source)
    try:
        s.sendall(raw)
        return status_line(s)
    except (BrokenPipeError, ConnectionResetError):
        return "(closed)"
    finally:
        s.close()


# 200 idle connections from one address and 20 slow ones that trickle a header byte by byte
# from another: the server keeps at most its per-address cap of each, and serves the others.
idle = []
for _ in range(200):
    try:
        idle.append(connect("127.0.0.3"))
    except OSError:
        pass
stop = threading.Event()


def slowloris():
    try:
        s = connect("127.0.0.4")
        s.sendall(b"GET /status HTTP/1.1\r\n" + host_header)
    except OSError:
        return
    while not stop.is_set():
        try:
            s.sendall(b"X-a: b\r\n")
        except OSError:
            return
        time.sleep(0.5)


slow = [threading.Thread(target=slowloris, daemon=True) for _ in range(20)]
for t in slow:
    t.start()

latencies = []


def good():
    while not stop.is_set():
        start = time.monotonic()
        line = request(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        latencies.append((time.monotonic() - start, line))
        time.sleep(0.1)


g = threading.Thread(target=good, daemon=True)
g.start()

# DNS rebinding: a browser on the VPN sends the attacker's host name.
result["rebinding"] = request(b"GET /status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")


def still_open(s):
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


time.sleep(1)
result["idle_open"] = sum(1 for s in idle if still_open(s))
result["oversized_header"] = request(b"GET /status HTTP/1.1\r\nHost: x\r\nX-big: " + b"a" * (1 << 20) + b"\r\n\r\n")
result["many_headers"] = request(b"GET /status HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20000)) + b"\r\n")
result["unknown_method"] = request(b"BREW /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
result["unknown_path"] = request(b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
result["garbage"] = request(b"\x00\x01\x02 not http at all\r\n\r\n")
result["sync_no_token"] = request(b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
result["sync_wrong_token"] = request(b"POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
big = connect()
try:
    big.sendall(b"POST /sync HTTP/1.1\r\n" + host_header + b"Content-Length: 104857600\r\n\r\n")
    sent = 0
    chunk = b"z" * 65536
    big.settimeout(5)
    while sent < (100 << 20):
        big.sendall(chunk)
        sent += len(chunk)
    result["oversized_body"] = status_line(big)
except OSError:
    result["oversized_body"] = "(closed)"
result["oversized_body_sent_mb"] = round(sent / (1 << 20), 1) if "sent" in dir() else 0
# Mutation fuzzing of the request path: methods, targets, versions, headers, bodies.
rng = random.Random(seed)
templates = [
    b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n",
    b"GET /healthz HTTP/1.0\r\n\r\n",
    b"POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer right-token\r\nContent-Length: 0\r\n\r\n",
    b"POST /sync HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
]
templates = [t.replace(b"Host: x\r\n", host_header) for t in templates]
tokens = [b"\r\n", b"\n", b"\r", b"\x00", b" ", b":", b"%", b"%00", b"/..", b"?", b"#", b"\xff\xfe", b"Content-Length: -1\r\n",
          b"Content-Length: 99999999999999999999\r\n", b"Transfer-Encoding: chunked\r\n", b"Authorization: Bearer \r\n",
          b"Host: a\r\nHost: b\r\n", b"HTTP/9.9", b"\t", b"ffffffffffffffff\r\n", "é".encode(), b"A" * 9000]


def mutate(data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.choice(tokens)
        elif op == 2:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3 and data:
            end = min(len(data), at + rng.randint(1, 12))
            del data[at:end]
        else:
            line = rng.choice(bytes(data).split(b"\r\n")[:-1] or [b"X: y"])
            data[at:at] = line + b"\r\n"
    return bytes(data)


def fuzz_one(raw):
    try:
        s = connect()
    except OSError:
        return "(refused)"
    try:
        s.settimeout(5)
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        return status_line(s)
    except OSError:
        return "(closed)"
    finally:
        s.close()


counts, odd = {}, []
for _ in range(fuzz_requests):
    raw = mutate(rng.choice(templates))
    line = fuzz_one(raw)
    key = line[:12] if line.startswith("HTTP/1.") else line
    counts[key] = counts.get(key, 0) + 1
    well_formed = line in ("(closed)",) or (line.startswith("HTTP/1.") and line[9:12].isdigit())
    if not well_formed or line[9:10] == "5" or line == "(refused)":
        odd.append({"request": raw[:200].decode("latin-1"), "response": line})
result["fuzz_seed"] = seed
result["fuzz_requests"] = fuzz_requests
result["fuzz_responses"] = counts
result["fuzz_odd"] = odd[:20]
result["fuzz_odd_count"] = len(odd)

time.sleep(3)
stop.set()
g.join(5)
for s in idle:
    s.close()
result["good_requests"] = len(latencies)
result["good_ok"] = sum(1 for _, line in latencies if " 200 " in line)
result["good_max_seconds"] = round(max((d for d, _ in latencies), default=0), 3)
print(json.dumps(result))
