#!/usr/bin/env python3
# usage: tls_records.py PORT CA MARKER line SCENARIO SIZE
#        tls_records.py PORT CA MARKER http PATH COUNT
# A TLS client outside the shield that says how the server's data came in records: it connects
# to 127.0.0.1:PORT, verifies the server (name localhost) against CA, and feeds the TLS records
# it receives to OpenSSL one at a time (memory BIOs), so that each record's plaintext is known.
#   line: sends "SCENARIO\n", reads SIZE bytes, answers "ack\n", reads to the end of the stream.
#   http: sends COUNT keep-alive GETs of PATH, each after the answer to the last.
# Prints the plaintext size of each record that carried data (one line; for http, a line per
# response) and writes the plaintext to records.out. Fails if MARKER was on the wire.
import socket, ssl, sys

port, ca, marker, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4]
context = ssl.create_default_context(cafile=ca)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
sock = socket.create_connection(("127.0.0.1", port))
wire = bytearray()  # all the server sent
unparsed = bytearray()  # received, not yet fed to OpenSSL
ended = False


def send(plaintext=b""):
    if plaintext:
        tls.write(plaintext)
    data = outgoing.read()
    if data:
        sock.sendall(data)


def receive():
    try:
        data = sock.recv(65536)
    except ConnectionResetError:  # a server that closed before reading the answer: the end
        return b""
    wire.extend(data)
    return data


while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        send()
        data = receive()
        if not data:
            sys.exit("end of stream in the handshake")
        incoming.write(data)
send()
unparsed.extend(incoming.read())  # what came after the handshake's records, if anything


def next_record():
    """Feeds the next whole record to OpenSSL; returns the plaintext it carried (b"" for none),
    or None at the end of the stream."""
    global ended
    while not ended and (len(unparsed) < 5 or len(unparsed) < 5 + int.from_bytes(unparsed[3:5], "big")):
        data = receive()
        if not data:
            ended = True
            if unparsed:
                sys.exit("the stream ended inside a record")
        unparsed.extend(data)
    if ended and not unparsed:
        return None
    size = 5 + int.from_bytes(unparsed[3:5], "big")
    incoming.write(bytes(unparsed[:size]))
    del unparsed[:size]
    plaintext = bytearray()
    try:
        while data := tls.read(65536):
            plaintext.extend(data)
        ended = True  # b"": close_notify
    except ssl.SSLWantReadError:
        pass
    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # close_notify
        ended = True
    return bytes(plaintext)


received = bytearray()
lines = []
if mode == "line":
    scenario, size = sys.argv[5], int(sys.argv[6])
    send(scenario.encode() + b"\n")
    sizes = []
    while (record := next_record()) is not None:
        if record:
            sizes.append(len(record))
            received.extend(record)
            if len(received) == size:
                try:
                    send(b"ack\n")
                except OSError:  # the server closed without waiting for it
                    pass
    lines.append(sizes)
else:
    path, count = sys.argv[5], int(sys.argv[6])
    for _ in range(count):
        send(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path.encode())
        response, sizes = bytearray(), []
        while True:
            head, _, body = bytes(response).partition(b"\r\n\r\n")
            if _ and len(body) >= int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
                break
            record = next_record()
            if record is None:
                sys.exit("the stream ended inside a response: %r" % bytes(response[:200]))
            if record:
                sizes.append(len(record))
                response.extend(record)
        received.extend(response)
        lines.append(sizes)
sock.close()
if marker in wire:
    sys.exit("plaintext marker on the wire")
open("records.out", "wb").write(received)
for sizes in lines:
    print(" ".join(str(s) for s in sizes))
