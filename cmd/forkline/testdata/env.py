"""What a worker of forkline run sees, served as JSON on every GET.

It lists its descriptors first, before it opens anything itself, and
reports fd 3 as the socket it then serves on; then READY=1.
"""

import json
import os
import select
import socket

names = os.listdir("/proc/self/fd")  # opens a descriptor of its own to list
fds = {}
for n in names:
    try:
        fds[n] = os.readlink("/proc/self/fd/" + n)
    except OSError:
        pass  # the one listdir used, closed since
nonblocking = not os.get_blocking(3)
s = socket.socket(fileno=3)
report = {
    "pid": os.getpid(),
    "fds": fds,
    "env": {k: v for k, v in os.environ.items()},
    "fd3": {
        "family": int(s.family),
        "type": int(s.type),
        "acceptconn": s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        "port": s.getsockname()[1],
        "nonblocking": nonblocking,
    },
}
body = json.dumps(report).encode()
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
n.close()
s.setblocking(False)  # whatever it was: accept after select
while True:
    select.select([s], [], [])
    try:
        c, _ = s.accept()
    except BlockingIOError:
        continue
    c.setblocking(True)
    c.recv(65536)  # one small request
    c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    c.close()
