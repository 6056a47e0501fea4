"""gunicorn settings for a worker of forkline run (see README.md):

    forkline run -workers 2 -- gunicorn -c forkline.conf.py -w 1 app:app

gunicorn adopts forkline's socket by itself (LISTEN_FDS, LISTEN_PID), and
its master sends READY=1 to $NOTIFY_SOCKET by itself, but as soon as it
listens: before it has forked its worker, and before that worker has
imported the app. forkline then takes the slot for ready too early: an app
that cannot be imported passes the start or the reload (and the reload
drains the generation that served), and a SIGTERM that reaches the master
while its worker boots is lost by gunicorn 20.1 (the new worker still has
the master's signal handlers; the master waits graceful_timeout for it).

Here the master keeps quiet and the worker says READY=1 once it has loaded
the app and set its own signal handlers (post_worker_init).
"""

import os
import socket

# forkline kills a worker still draining after -stop-timeout (10 s): let
# gunicorn's own limit for its worker's last requests end before.
graceful_timeout = 8

# The master's READY=1 (gunicorn calls sd_notify when NOTIFY_SOCKET is set)
# would come too early; the worker says it instead.
_notify_socket = os.environ.pop("NOTIFY_SOCKET", None)


def post_worker_init(worker):
    if not _notify_socket:
        return
    addr = _notify_socket
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", addr)
