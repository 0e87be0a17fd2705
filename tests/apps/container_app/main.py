"""A stdlib-only app for the container tests: it reports who and where it runs."""

import json
import os
import shutil
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def report() -> dict:
    jq = shutil.which("jq")
    version = subprocess.run([jq, "--version"], capture_output=True, text=True).stdout if jq else ""
    try:
        stage = open("/stage.txt").read().strip()
    except OSError:
        stage = None
    return {
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "jq": version.strip(),
        "stage": stage,
        "port": os.environ.get("PORT"),
        "k_service": os.environ.get("K_SERVICE"),
        "k_revision": os.environ.get("K_REVISION"),
        "greeting": os.environ.get("GREETING"),
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(report()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print("request:", format % args, flush=True)


if __name__ == "__main__":
    print("listening on", os.environ["PORT"], flush=True)
    ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
