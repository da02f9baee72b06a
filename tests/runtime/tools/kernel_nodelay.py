#!/usr/bin/env python3
# usage: kernel_nodelay.py PROGRAM ARGS...
# Runs PROGRAM, a client that prints "NAME FD VIEW" at each stop (VIEW: TCP_NODELAY as it sees
# it) and then waits for a line on stdin; reads the kernel's own TCP_NODELAY of descriptor FD
# through pidfd_getfd (a duplicate no shield serves) and prints "NAME VIEW KERNEL-VIEW".
import ctypes, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
pidfd = os.pidfd_open(p.pid)
for line in p.stdout:
    name, fd, view = line.split()
    dup = libc.syscall(438, pidfd, int(fd), 0)
    if dup < 0: sys.exit(f"pidfd_getfd: errno {ctypes.get_errno()}")
    s = socket.socket(fileno=dup)
    print(name, view, s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), flush=True)
    s.close()
    p.stdin.write("\n"); p.stdin.flush()
sys.exit(p.wait())
