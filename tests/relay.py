# A plain TCP relay for the tests: listens on 127.0.0.1:LISTEN, connects each client to
# 127.0.0.1:TARGET, and appends every byte it passes (both ways) to LOG, so that a test can look
# for plaintext on the wire. usage: relay.py LISTEN TARGET LOG
import socket, sys, threading
listen, target, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            with lock, open(log, "ab") as f:
                f.write(data)
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", listen))
s.listen(64)
while True:
    c, _ = s.accept()
    u = socket.create_connection(("127.0.0.1", target))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
