#!/usr/bin/env python3
"""Test listener: answers every TCP connection on the given ports with a tiny HTTP response
naming the port, and echoes UDP datagrams on ports given as udp:N. Runs until killed."""
import socket, sys, threading

def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        c.settimeout(0.5)
        try:
            c.recv(4096)
        except OSError:
            pass
        try:
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nport %d\n" % port)
        except OSError:
            pass
        c.close()

def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)

for arg in sys.argv[1:]:
    target = udp if arg.startswith("udp:") else tcp
    threading.Thread(target=target, args=(int(arg.split(":")[-1]),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
