# The WSGI hello app of `make bench-run`, for gunicorn alone (gunicorn -w 2
# app:app) and under forkline run (forkline run -workers 2 -- gunicorn -w 1
# app:app). It answers, as every hello of the benchmarks does,
#
#     Hello from worker=<FORKLINE_WORKER_ID or 0> pid=<pid> gen=<FORKLINE_GENERATION or 0>
#
# where pid is the gunicorn worker process that served the request.
import os

_ID = os.environ.get("FORKLINE_WORKER_ID", "0")
_GEN = os.environ.get("FORKLINE_GENERATION", "0")


def app(environ, start_response):
    body = ("Hello from worker=%s pid=%d gen=%s\n" % (_ID, os.getpid(), _GEN)).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
