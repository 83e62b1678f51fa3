#!/usr/bin/env python3
"""Probes ports of one host at once and prints `PROTO/PORT open|closed` per line.
TCP: open when a connection is accepted. UDP: open when a datagram is echoed back."""
import socket, sys
from concurrent.futures import ThreadPoolExecutor

host, timeout = sys.argv[1], 1.5

def probe(spec):
    proto, port = (spec.split(":") + [None])[:2] if ":" in spec else ("tcp", spec)
    port = int(port)
    if proto == "tcp":
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return f"tcp/{port} open"
        except OSError:
            return f"tcp/{port} closed"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(b"ping", (host, port))
        s.recvfrom(64)
        return f"udp/{port} open"
    except OSError:
        return f"udp/{port} closed"
    finally:
        s.close()

with ThreadPoolExecutor(max_workers=32) as pool:
    for line in pool.map(probe, sys.argv[2:]):
        print(line)
