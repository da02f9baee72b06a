#!/usr/bin/env python3
"""Hostile clients for CAS's two ports, as real sockets (tests/cas/*.sh).

  hostile_client.py body HOST PORT CA CERT KEY chunked|length MIB
      POSTs a MIB MiB session body, chunked or with a Content-Length, streaming it; prints the
      HTTP status CAS answered with, or "closed" if CAS ended the connection first.
  hostile_client.py headers HOST PORT CA CERT KEY COUNT
      sends COUNT header lines; prints the status or "closed".
  hostile_client.py slow HOST REST_PORT ATTESTATION_PORT COUNT
      holds COUNT connections on each port, each from its own loopback address (127.0.0.2...),
      sending a TLS ClientHello one byte at a time (REST) or a nonce request one byte at a time
      (attestation port), one byte every 0.5 s; prints "ready" once all are connected and have
      sent their first byte, then dribbles (bounded: 120 s). On SIGUSR1 it prints "open N", the
      number of its connections CAS has not ended, and "age S", the seconds since its first
      connection was made, and exits.
  hostile_client.py handshakes HOST PORT CA CERT KEY COUNT
      completes COUNT TLS handshakes at once (from 127.0.0.2... in turn) and holds them all
      open together; prints how many completed.
"""
import signal
import threading
import socket
import ssl
import sys
import time


def tls(host, port, ca, cert, key):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    raw = socket.create_connection((host, port), timeout=60)
    return ctx.wrap_socket(raw, server_hostname="scone-cas")


def status_of(conn):
    try:
        head = conn.recv(4096).decode(errors="replace")
    except (OSError, ssl.SSLError):
        return "closed"
    if not head.startswith("HTTP/1.1 "):
        return "closed"
    return head.split(" ")[1]


def body(host, port, ca, cert, key, framing, mib):
    conn = tls(host, int(port), ca, cert, key)
    total = int(mib) << 20
    head = "POST /session HTTP/1.1\r\nHost: scone-cas\r\nContent-Type: application/yaml\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if framing == "chunked" else f"Content-Length: {total}\r\n\r\n"
    chunk = b"a" * (1 << 20)
    try:
        conn.sendall(head.encode())
        for _ in range(int(mib)):
            conn.sendall(b"100000\r\n" + chunk + b"\r\n" if framing == "chunked" else chunk)
        if framing == "chunked":
            conn.sendall(b"0\r\n\r\n")
    except (OSError, ssl.SSLError):
        pass  # CAS stopped reading: its answer (if any) is waiting
    print(status_of(conn))


def headers(host, port, ca, cert, key, count):
    conn = tls(host, int(port), ca, cert, key)
    try:
        conn.sendall(b"GET /session HTTP/1.1\r\nHost: scone-cas\r\n")
        line = b"X-Filler: " + b"b" * 1000 + b"\r\n"
        for _ in range(int(count) // 64):
            conn.sendall(line * 64)
        conn.sendall(b"\r\n")
    except (OSError, ssl.SSLError):
        pass
    print(status_of(conn))


def client_hello():
    """The first TLS record a real client sends (made by Python's own TLS stack)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="scone-cas")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def still_open(s):
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def slow(host, rest_port, attestation_port, count):
    hello = client_hello()
    conns = []
    first = time.monotonic()
    for i in range(int(count)):
        for port, payload in ((int(rest_port), hello), (int(attestation_port), b"scone-nonce-v1\n")):
            s = socket.socket()
            s.bind((f"127.0.0.{2 + i}", 0))
            s.connect((host, port))
            s.send(payload[:1])
            conns.append([s, payload, 1])
    def report(*_):
        print("open", sum(still_open(c[0]) for c in conns), flush=True)
        print("age", int(time.monotonic() - first), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGUSR1, report)
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)  # the dribble itself, not a synchronisation
        for c in conns:
            s, payload, sent = c
            if sent < len(payload) - 1:  # never the last byte: the request never completes
                try:
                    s.send(payload[sent:sent + 1])
                    c[2] += 1
                except OSError:
                    pass


def handshakes(host, port, ca, cert, key, count):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    ctx.load_cert_chain(cert, key)
    held, done, lock = [], [0], threading.Lock()
    barrier = threading.Barrier(int(count) + 1, timeout=60)

    def one(i):
        try:
            raw = socket.socket()
            raw.bind((f"127.0.0.{2 + i % 200}", 0))
            raw.settimeout(30)
            raw.connect((host, int(port)))
            conn = ctx.wrap_socket(raw, server_hostname="scone-cas")
            with lock:
                held.append(conn)
                done[0] += 1
        except (OSError, ssl.SSLError):
            pass
        try:
            barrier.wait()  # all open at once, then all close
        except threading.BrokenBarrierError:
            pass

    threads = [threading.Thread(target=one, args=(i,)) for i in range(int(count))]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    print(done[0], flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "body":
        body(*sys.argv[2:9])
    elif mode == "headers":
        headers(*sys.argv[2:8])
    elif mode == "slow":
        slow(*sys.argv[2:6])
    elif mode == "handshakes":
        handshakes(*sys.argv[2:8])
    else:
        sys.exit("unknown mode " + mode)
