#!/usr/bin/env python3
"""Swaps a symbolic link at the moment a file is opened, deterministically.

usage: swap_on_open.py FILE LINK NEW_TARGET READY_FIFO

Watches FILE with fanotify permission events: the first open of FILE is held until LINK has
been made to point at NEW_TARGET, then allowed. Writes one line to READY_FIFO once watching.
This is the check-then-use race of an exec that inspects a program by its path and then lets
the kernel look the path up again, won every time. Needs CAP_SYS_ADMIN (root)."""
import ctypes
import os
import struct
import sys

FAN_CLASS_CONTENT, FAN_OPEN_PERM, FAN_MARK_ADD, FAN_ALLOW, AT_FDCWD = 0x4, 0x10000, 0x1, 0x1, -100
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]

def check(result, what):
    if result < 0:
        sys.exit(f"swap_on_open: {what}: {os.strerror(ctypes.get_errno())}")
    return result

target, link, new_target, ready = sys.argv[1:5]
fan = check(libc.fanotify_init(FAN_CLASS_CONTENT, os.O_RDONLY), "fanotify_init")
check(libc.fanotify_mark(fan, FAN_MARK_ADD, FAN_OPEN_PERM, AT_FDCWD, target.encode()), "fanotify_mark")
with open(ready, "w") as f:
    f.write("watching\n")
swapped = False
while True:
    events = os.read(fan, 4096)
    at = 0
    while at < len(events):
        length, _, _, _, _, event_fd, _ = struct.unpack_from("IBBHQii", events, at)
        if not swapped:
            os.symlink(new_target, link + ".new")
            os.replace(link + ".new", link)
            swapped = True
        os.write(fan, struct.pack("iI", event_fd, FAN_ALLOW))
        os.close(event_fd)
        at += length
