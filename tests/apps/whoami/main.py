"""A standard-library app for the access and fault tests: who am I, who called me, call others.

GET /               -> JSON: K_SERVICE, K_REVISION, pid, the Authorization headers it got
GET /call?url=URL&host=HOST[&token=metadata]
                    -> calls URL (the router) with Host HOST, with an ID token from the
                       metadata server when token=metadata; JSON: status and body
GET /token?audience=URL -> what the metadata server answers (status and body)
GET /slow?seconds=S -> sleeps, then answers (an in-flight request)

Env: IGNORE_SIGTERM=1 ignores SIGTERM (to be SIGKILLed after the grace);
SLEEP_BEFORE_LISTEN=S sleeps that long before it listens.
"""

import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("IGNORE_SIGTERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("whoami: ignoring SIGTERM", flush=True)


def fetch(url, headers):
    request = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metadata_token(audience):
    base = os.environ["HOMERUN_METADATA_URL"]
    query = urllib.parse.urlencode({"audience": audience})
    return fetch(
        f"{base}/instance/service-accounts/default/identity?{query}",
        {"Metadata-Flavor": "Google"},
    )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/":
            self.reply(
                200,
                {
                    "K_SERVICE": os.environ.get("K_SERVICE"),
                    "K_REVISION": os.environ.get("K_REVISION"),
                    "pid": os.getpid(),
                    "port": int(os.environ["PORT"]),
                    "pgid": os.getpgid(0),
                    "authorization": self.headers.get("Authorization"),
                    "x_serverless_authorization": self.headers.get("X-Serverless-Authorization"),
                },
            )
        elif url.path == "/token":
            status, body = metadata_token(query["audience"])
            self.reply(200, {"status": status, "body": body})
        elif url.path == "/call":
            headers = {"Host": query["host"]}
            if query.get("token") == "metadata":
                status, token = metadata_token(query.get("audience") or "http://" + query["host"])
                if status != 200:
                    self.reply(200, {"status": -1, "body": token})
                    return
                headers["Authorization"] = f"Bearer {token}"
            status, body = fetch(query["url"], headers)
            self.reply(200, {"status": status, "body": body})
        elif url.path == "/slow":
            time.sleep(float(query.get("seconds", "1")))
            port = int(os.environ["PORT"])
            self.reply(200, {"slept": query.get("seconds"), "pid": os.getpid(), "port": port})
        else:
            self.reply(404, {"error": "no such path"})

    def reply(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    time.sleep(float(os.environ.get("SLEEP_BEFORE_LISTEN", "0")))
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    print(f"whoami: listening on {os.environ['PORT']} pid={os.getpid()}", flush=True)
    server.serve_forever()
