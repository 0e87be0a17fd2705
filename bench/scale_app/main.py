"""bench/scale.py's app: the standard library's HTTP server answering with its pid and port
(in a sandbox every instance has a PID namespace of its own, so pids alone repeat; the
instances of one revision share its network namespace, so their ports differ).

Nagle's algorithm is off (as in gunicorn and uvicorn): http.server writes the head and the body
separately, and with it on, the body waits for the peer's delayed ACK (some 40 ms a request).
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        body = json.dumps({"pid": os.getpid(), "port": os.environ["PORT"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
