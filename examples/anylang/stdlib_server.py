#!/usr/bin/env python3
"""An HTTP/1.1 server in Python's standard library alone, run by forkline:

    forkline run -workers 2 -- python3 stdlib_server.py

It serves the socket forkline passes as descriptor 3 (LISTEN_FDS=1,
LISTEN_PID=its own pid), tells forkline it is ready with READY=1 on
$NOTIFY_SOCKET (the sd_notify protocol: one datagram), and on SIGTERM drains:
it stops accepting (what is queued on the socket stays there for the next
worker of its slot), answers every request it has, with "Connection: close"
from then on, gives an idle keep-alive connection IDLE_GRACE seconds to send
one more request, and exits once every connection is done.

Run by hand (no LISTEN_FDS) it binds 127.0.0.1:$PORT (default 8000).

GET / answers "worker=<FORKLINE_WORKER_ID> pid=<pid> gen=<FORKLINE_GENERATION>";
GET /slow?ms=N answers the same after N milliseconds (default 500).
"""

import http.server
import os
import selectors
import signal
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

WORKER = os.environ.get("FORKLINE_WORKER_ID", "-")
GEN = os.environ.get("FORKLINE_GENERATION", "-")
IDLE_GRACE = 1.0  # seconds an idle keep-alive connection may stay once the drain began

draining = threading.Event()
lock = threading.Condition()
idle = {}  # connection -> when it became idle (accepted, or its last response sent)
conns = set()  # every open connection


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 120  # an idle connection's limit outside a drain
    # The headers and the body are two writes: without TCP_NODELAY, each
    # answer on a keep-alive connection waits ~40 ms for the client's ACK.
    disable_nagle_algorithm = True

    def setup(self):
        super().setup()
        with lock:
            conns.add(self.connection)
            idle[self.connection] = time.monotonic()

    def parse_request(self):
        with lock:  # a request came: not idle (the drain does not cut it)
            idle.pop(self.connection, None)
        return super().parse_request()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["500"])[0])
            print(f"slow request: {ms} ms", flush=True)
            time.sleep(ms / 1000)
        body = f"worker={WORKER} pid={os.getpid()} gen={GEN}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        with lock:
            idle[self.connection] = time.monotonic()

    def finish(self):
        super().finish()
        with lock:
            conns.discard(self.connection)
            idle.pop(self.connection, None)
            lock.notify_all()

    def log_message(self, fmt, *args):
        pass  # no access log


def serve(conn, addr):
    try:
        Handler(conn, addr, None)
    except OSError:
        pass  # the client went away
    finally:
        conn.close()


def listener():
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        return socket.socket(fileno=3), True  # family and type come from the descriptor
    s = socket.create_server(("127.0.0.1", int(os.environ.get("PORT", "8000"))))
    return s, False


def notify(state):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), path)


def main():
    ln, _ = listener()
    # Non-blocking: during a reload the next worker of this slot accepts from
    # the same socket, and may take the connection select announced.
    ln.setblocking(False)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGTERM, lambda *_: draining.set())

    sel = selectors.DefaultSelector()
    sel.register(ln, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    notify("READY=1")
    while not draining.is_set():
        for key, _ in sel.select():
            if key.fileobj is wake_r:
                wake_r.recv(512)
                continue
            while not draining.is_set():
                try:
                    conn, addr = ln.accept()
                except (BlockingIOError, InterruptedError):
                    break
                threading.Thread(target=serve, args=(conn, addr)).start()

    # The drain: stop accepting (closing our descriptor only: the socket, and
    # its queue, stay with forkline for the slot's next worker) ...
    sel.close()
    ln.close()
    notify("STOPPING=1")
    # ... then wait for every connection; one idle for IDLE_GRACE is cut
    # (SHUT_RD: its handler reads EOF, or a request that just came, and ends).
    with lock:
        while conns:
            now = time.monotonic()
            for c, since in list(idle.items()):
                if now - since >= IDLE_GRACE:
                    del idle[c]
                    try:
                        c.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass
            wait = min((since + IDLE_GRACE - now for since in idle.values()), default=None)
            lock.wait(timeout=None if wait is None else max(wait, 0.01))
    sys.exit(0)


if __name__ == "__main__":
    main()
