#!/usr/bin/env python3
"""Hostile HTTP clients against nodeagent's status server, with a good client timing /status
throughout. Prints one JSON object with what each attack got and the good client's latencies.

usage: clients.py HOST PORT
"""
import json
import socket
import sys
import threading
import time

host, port = sys.argv[1], int(sys.argv[2])
result = {}


def connect():
    s = socket.create_connection((host, port), timeout=10)
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


def request(raw):
    s = connect()
    try:
        s.sendall(raw)
        return status_line(s)
    except (BrokenPipeError, ConnectionResetError):
        return "(closed)"
    finally:
        s.close()


# 200 idle connections and 20 slow ones that trickle a header byte by byte.
idle = [connect() for _ in range(200)]
stop = threading.Event()


def slowloris():
    s = connect()
    s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
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

result["oversized_header"] = request(b"GET /status HTTP/1.1\r\nHost: x\r\nX-big: " + b"a" * (1 << 20) + b"\r\n\r\n")
result["many_headers"] = request(b"GET /status HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(20000)) + b"\r\n")
result["unknown_method"] = request(b"BREW /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
result["unknown_path"] = request(b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
result["garbage"] = request(b"\x00\x01\x02 not http at all\r\n\r\n")
result["sync_no_token"] = request(b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
result["sync_wrong_token"] = request(b"POST /sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
big = connect()
try:
    big.sendall(b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n")
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
time.sleep(3)
stop.set()
g.join(5)
for s in idle:
    s.close()
result["good_requests"] = len(latencies)
result["good_ok"] = sum(1 for _, line in latencies if " 200 " in line)
result["good_max_seconds"] = round(max((d for d, _ in latencies), default=0), 3)
print(json.dumps(result))
