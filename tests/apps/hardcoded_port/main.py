"""Serves, but on a port of its own choosing instead of $PORT (as `app.run()` does with 5000).

The kernel picks the port, so that parallel runs cannot collide; what matters is that it is
not $PORT."""

from http.server import BaseHTTPRequestHandler, HTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello\n")


server = HTTPServer(("127.0.0.1", 0), Hello)
print(f"hardcoded_port: serving on port {server.server_port}", flush=True)
server.serve_forever()
