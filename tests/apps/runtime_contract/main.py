"""A standard-library app that reports what the runtime contract is about, as Knative's
`runtime` and `readiness` test images do.

GET /runtime            -> JSON: env, cwd, argv, uid/gid, stdin, the descriptors open when the
                           process began, /tmp, the request as the app got it
GET /healthz/readiness  -> 200, or 503 after POST /readiness/off (until POST /readiness/on)
GET /healthz/liveness   -> 200 (counted), or 500 after POST /start-failing
GET /healthz/livenessCounter -> how many liveness checks this instance answered
Env: NOT_READY_AT_START=1 starts with readiness off.
"""

import json
import os
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def open_descriptors():
    """fd -> what it is, as the process has them now (the listing's own one left out)."""
    listing = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = os.listdir(listing)
    finally:
        os.close(listing)
    found = {}
    for name in names:
        if int(name) == listing:
            continue
        try:
            found[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return found


# Before this app opens anything of its own.
DESCRIPTORS_AT_START = open_descriptors()
STDIN = "eof" if os.read(0, 1) == b"" else "data"
STATE = {"ready": os.environ.get("NOT_READY_AT_START") != "1", "live": True, "checks": 0}


def tmp_writable():
    try:
        with tempfile.NamedTemporaryFile(dir="/tmp") as scratch:
            scratch.write(b"x")
        return True
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/runtime":
            with open("/proc/self/cmdline", "rb") as cmdline:
                command_line = [part.decode() for part in cmdline.read().split(b"\0") if part]
            self.answer(
                200,
                {
                    "env": dict(os.environ),
                    "cwd": os.getcwd(),
                    "argv": sys.argv,
                    "cmdline": command_line,
                    "pid": os.getpid(),
                    "uid": os.getuid(),
                    "gid": os.getgid(),
                    "stdin": STDIN,
                    "descriptors_at_start": DESCRIPTORS_AT_START,
                    "tmp_writable": tmp_writable(),
                    "request": {
                        "version": self.request_version,
                        "headers": [[name, value] for name, value in self.headers.items()],
                    },
                },
            )
        elif self.path == "/healthz/readiness":
            self.answer(200 if STATE["ready"] else 503, b"ready" if STATE["ready"] else b"no")
        elif self.path == "/healthz/liveness":
            STATE["checks"] += 1
            self.answer(200 if STATE["live"] else 500, b"alive" if STATE["live"] else b"failing")
        elif self.path == "/healthz/livenessCounter":
            self.answer(200, str(STATE["checks"]).encode())
        else:
            self.answer(200, b"hello")

    def do_POST(self):
        if self.path == "/start-failing":
            STATE["live"] = False
        elif self.path in ("/readiness/off", "/readiness/on"):
            STATE["ready"] = self.path.endswith("/on")
        self.answer(200, b"ok")

    def log_message(self, format, *args):
        print("runtime_contract:", self.requestline, flush=True)


print(f"runtime_contract: listening on {os.environ['PORT']}", flush=True)
print("runtime_contract: to stderr", file=sys.stderr, flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
