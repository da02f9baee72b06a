#!/usr/bin/env python3
# capture_check.py PCAP MARKER: checks a tcpdump capture of protected connections. Reassembles
# each TCP stream direction (segments ordered by sequence number, retransmissions counted once)
# and fails if MARKER is in any of them, if a stream does not start with a TLS handshake record
# (0x16 0x03: a ClientHello or a ServerHello), or if there is no stream at all (an empty capture
# proves nothing). Prints what it found.
import struct
import sys

path, marker = sys.argv[1], sys.argv[2].encode()
data = open(path, "rb").read()
if len(data) < 24:
    sys.exit("capture %s is empty (%d bytes)" % (path, len(data)))
magic = data[:4]
endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}.get(magic)
if endian is None:
    sys.exit("%s is not a pcap file" % path)
link = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
link_header = {0: 4, 1: 14, 113: 16, 276: 20}.get(link)
if link_header is None:
    sys.exit("link type %d not handled" % link)

streams = {}  # (src, sport, dst, dport) -> {relative seq: payload}
first_seq = {}
pos = 24
while pos + 16 <= len(data):
    _, _, caplen, length = struct.unpack(endian + "IIII", data[pos:pos + 16])
    if caplen != length:
        sys.exit("a packet was cut to %d of its %d bytes: the capture does not hold all payload" % (caplen, length))
    frame = data[pos + 16:pos + 16 + caplen]
    pos += 16 + caplen
    ip = frame[link_header:]
    if not ip:
        continue
    version = ip[0] >> 4
    if version == 4:
        header, proto = (ip[0] & 0x0F) * 4, ip[9]
        total = struct.unpack("!H", ip[2:4])[0]
        src, dst, ip = ip[12:16], ip[16:20], ip[:total]
    elif version == 6:
        header, proto = 40, ip[6]
        total = 40 + struct.unpack("!H", ip[4:6])[0]
        src, dst, ip = ip[8:24], ip[24:40], ip[:total]
    else:
        continue
    if proto != 6:
        continue
    tcp = ip[header:]
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    flags = tcp[13]
    payload = tcp[(tcp[12] >> 4) * 4:]
    key = (src, sport, dst, dport)
    if flags & 0x02:  # SYN: the stream's first byte is seq + 1
        first_seq[key] = (seq + 1) & 0xFFFFFFFF
    if payload:
        base = first_seq.setdefault(key, seq)
        streams.setdefault(key, {})[(seq - base) & 0xFFFFFFFF] = payload

joined = {key: b"".join(segments[offset] for offset in sorted(segments)) for key, segments in streams.items()}
for key, stream in joined.items():
    if marker in stream:
        sys.exit("plaintext marker in the capture: stream %d -> %d" % (key[1], key[3]))
total_bytes = 0
tls_streams = 0
for key, stream in joined.items():
    total_bytes += len(stream)
    if not stream.startswith(b"\x16\x03"):
        sys.exit("stream %d -> %d is not TLS: %r" % (key[1], key[3], stream[:16]))
    tls_streams += 1
if tls_streams == 0:
    sys.exit("no TCP payload in the capture %s" % path)
print("capture: %d streams, %d with TLS, %d bytes, no marker" % (len(streams), tls_streams, total_bytes))
