"""A WSGI app for gunicorn, run by forkline (see README.md):

    forkline run -workers 2 -- gunicorn -w 1 app:app

GET / answers "worker=<FORKLINE_WORKER_ID> pid=<pid> gen=<FORKLINE_GENERATION>";
GET /slow?ms=N answers the same after N milliseconds (default 500), to watch
a drain finish a request in flight.
"""

import os
import sys
import time
from urllib.parse import parse_qs

WORKER = os.environ.get("FORKLINE_WORKER_ID", "-")
GEN = os.environ.get("FORKLINE_GENERATION", "-")


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["500"])[0])
        print(f"slow request: {ms} ms", flush=True)
        time.sleep(ms / 1000)
    body = f"worker={WORKER} pid={os.getpid()} gen={GEN}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
