"""Watches a directory with inotify (through ctypes: no inotify-tools needed) and prints each
event as "EVENT NAME", one per line, for CLOSE_WRITE, CLOSE_NOWRITE and DELETE; prints "ready"
once the watch is in place and stops after the CLOSE_WRITE of the file named STOP.
usage: inotify_watch.py DIR STOP"""
import ctypes
import os
import struct
import sys

IN_CLOSE_WRITE, IN_CLOSE_NOWRITE, IN_DELETE = 0x8, 0x10, 0x200
NAMES = {IN_CLOSE_WRITE: "CLOSE_WRITE", IN_CLOSE_NOWRITE: "CLOSE_NOWRITE", IN_DELETE: "DELETE"}

libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_DELETE) < 0:
    sys.exit("inotify: " + os.strerror(ctypes.get_errno()))
print("ready", flush=True)
while True:
    data = os.read(fd, 65536)
    pos = 0
    while pos < len(data):
        _, mask, _, size = struct.unpack_from("iIII", data, pos)
        name = data[pos + 16:pos + 16 + size].rstrip(b"\0").decode()
        pos += 16 + size
        for bit, text in NAMES.items():
            if mask & bit:
                print(text, name, flush=True)
        if mask & IN_CLOSE_WRITE and name == sys.argv[2]:
            sys.exit(0)
