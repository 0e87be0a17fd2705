"""A stdlib-only app for the container tests: it reports who and where it runs."""

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


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
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "account": account(),
    }


def account() -> str:
    """The service account the metadata server says this instance runs as, or the error."""
    url = (
        f"http://{os.environ.get('GCE_METADATA_HOST', 'metadata.google.internal')}"
        "/computeMetadata/v1/instance/service-accounts/default/email"
    )
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()
    except OSError as error:
        return f"error: {error}"


def connect(address: str) -> str:
    """Whether a TCP connection to HOST:PORT opens from here."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return "connected"
    except OSError as error:
        return f"error: {error}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        asked = parse_qs(urlsplit(self.path).query).get("connect")
        body = json.dumps(connect(asked[0]) if asked else report()).encode()
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
