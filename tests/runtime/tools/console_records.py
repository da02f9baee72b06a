#!/usr/bin/env python3
"""Reads and rewrites a shielded console's records as root on the host could (docs/console-shield.md).

usage: console_records.py FILE list                  one line per record: number offset size type-byte stream
       console_records.py FILE flip N OUT            one bit of record N's ciphertext flipped
       console_records.py FILE delete N OUT          record N removed
       console_records.py FILE swap N M OUT          records N and M exchanged
       console_records.py FILE dup N OUT             record N written twice
       console_records.py FILE cut BYTES OUT         the last BYTES bytes cut off
       console_records.py FILE drop-stream S OUT     every record of stream S (hex id, as listed) removed
Records are numbered from 1. The format: version u8, type u8, size u32 LE, stream [16], sequence u64,
nonce [12], ciphertext [size], tag [16].
"""
import struct
import sys

HEADER = 42
TAG = 16


def records(data):
    out, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from("<I", data, pos + 2)[0]
        end = pos + HEADER + size + TAG
        out.append({"offset": pos, "bytes": data[pos:end], "size": size, "type": data[pos + 1],
                    "stream": data[pos + 6:pos + 22].hex(), "seq": struct.unpack_from("<Q", data, pos + 22)[0]})
        pos = end
    return out


def main():
    data = open(sys.argv[1], "rb").read()
    op = sys.argv[2]
    recs = records(data)
    if op == "list":
        for i, r in enumerate(recs, 1):
            print(i, r["offset"], r["size"], r["type"], r["stream"], r["seq"])
        return
    out = sys.argv[-1]
    if op == "cut":
        new = data[:len(data) - int(sys.argv[3])]
    else:
        blobs = [bytearray(r["bytes"]) for r in recs]
        n = int(sys.argv[3]) - 1 if op != "drop-stream" else None
        if op == "flip":
            blobs[n][HEADER] ^= 0x01
        elif op == "delete":
            del blobs[n]
        elif op == "swap":
            m = int(sys.argv[4]) - 1
            blobs[n], blobs[m] = blobs[m], blobs[n]
        elif op == "dup":
            blobs.insert(n + 1, bytearray(blobs[n]))
        elif op == "drop-stream":
            blobs = [b for b, r in zip(blobs, recs) if r["stream"] != sys.argv[3]]
        else:
            sys.exit("unknown operation " + op)
        new = b"".join(bytes(b) for b in blobs)
    open(out, "wb").write(new)


main()
