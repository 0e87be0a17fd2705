"""An app whose health a test steers through files in its folder: `ready` present -> /ready
answers 200 (else 503); `/hang` blocks its one thread for good (alive, answering nothing)."""

import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/hang":
            time.sleep(3600)
        status = 200
        if self.path == "/ready" and not os.path.exists("ready"):
            status = 503
        body = f"{self.path} {os.environ.get('PORT')} {self.headers.get('User-Agent')}".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(self.requestline, flush=True)


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
