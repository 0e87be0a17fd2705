"""A standard-library app that reports what the runtime contract is about, as Knative's
`runtime` and `readiness` test images do. `python main.py` serves it with http.server (the
Procfile: a custom command, spawned); without the Procfile homerun finds the WSGI `app` and
runs it under gunicorn (forked from the revision's zygote).

GET /runtime            -> JSON: env, cwd, argv, uid/gid, control groups, stdin, the descriptors open when the
                           process began (spawned only), /tmp, the request as the app got it
GET /cgroups            -> JSON: the memory and cpu limits of the instance's control groups
                           (cgroup v1 or v2) and whether the app could open them for writing
GET /tmp-file/NAME      -> the content of /tmp/NAME as the app sees it (404: none)
GET /healthz/readiness  -> 200, or 503 after POST /readiness/off (until POST /readiness/on)
GET /healthz/liveness   -> 200 (counted), or 500 after POST /start-failing
GET /healthz/livenessCounter -> how many liveness checks this instance answered
Env: NOT_READY_AT_START=1 starts with readiness off; CONTRACT_BIND is the address to listen
on (127.0.0.1; a container's 0.0.0.0).
"""

import json
import os
import sys
import tempfile
from http import HTTPStatus

STATE = {
    "ready": None,
    "live": True,
    "checks": 0,
    "descriptors_at_start": None,
    # Names this instance (a pid does not: in a sandbox's PID namespace every app is pid 2).
    "instance": None,
}


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


def writable(folder):
    try:
        with tempfile.NamedTemporaryFile(dir=folder) as scratch:
            scratch.write(b"x")
        return True
    except OSError:
        return False


CGROUP_FILES = {
    "memory": ("memory.limit_in_bytes",),
    "cpu": ("cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"),
    "": ("memory.max", "cpu.max", "cpu.weight"),  # cgroup v2's unified hierarchy
}


def cgroup_files():
    """name -> (value, writable) for the limit files of this process's groups: at
    /sys/fs/cgroup[/CONTROLLER]/PATH (PATH from /proc/self/cgroup), or at the hierarchy's top,
    where a container sees its own group."""
    found = {}
    with open("/proc/self/cgroup") as listing:
        for line in listing:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                for name in CGROUP_FILES.get(controller, ()):
                    top = os.path.join("/sys/fs/cgroup", controller)
                    for candidate in (os.path.join(top, path.lstrip("/"), name), f"{top}/{name}"):
                        if os.path.exists(candidate):
                            with open(candidate) as file:
                                value = file.read().strip()
                            found[name] = {"value": value, "writable": opens_for_writing(candidate)}
                            break
    return found


def opens_for_writing(path):
    # Opened, not written: nothing changes either way.
    try:
        os.close(os.open(path, os.O_WRONLY))
        return True
    except OSError:
        return False


def status_field(name):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def report(version, headers):
    with open("/proc/self/cmdline", "rb") as cmdline:
        command_line = [part.decode() for part in cmdline.read().split(b"\0") if part]
    with open("/proc/self/cgroup") as cgroup:
        control_groups = cgroup.read().splitlines()
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "argv": sys.argv,
        "cmdline": command_line,
        "pid": os.getpid(),
        "instance": STATE["instance"],
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cgroup": control_groups,
        "stdin": "eof" if os.read(0, 1) == b"" else "data",
        "descriptors_at_start": STATE["descriptors_at_start"],
        "tmp_writable": writable("/tmp"),
        "root_writable": writable("/"),
        "no_new_privs": status_field("NoNewPrivs"),
        "capabilities": {
            name: int(status_field(name), 16)
            for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
        },
        "seccomp": status_field("Seccomp"),
        "request": {"version": version, "headers": headers},
    }


def handle(method, path, version, headers):
    """(status, body) for one request."""
    if STATE["ready"] is None:  # read in the instance, not at import (a zygote imports)
        STATE["ready"] = os.environ.get("NOT_READY_AT_START") != "1"
        STATE["instance"] = os.urandom(8).hex()
    if method == "POST":
        if path == "/start-failing":
            STATE["live"] = False
        elif path in ("/readiness/off", "/readiness/on"):
            STATE["ready"] = path.endswith("/on")
        return 200, b"ok"
    if path == "/runtime":
        return 200, json.dumps(report(version, headers)).encode()
    if path == "/cgroups":
        return 200, json.dumps(cgroup_files()).encode()
    if path.startswith("/tmp-file/"):
        try:
            with open(os.path.join("/tmp", os.path.basename(path))) as file:
                return 200, file.read().encode()
        except OSError:
            return 404, b"no such file in this instance's /tmp"
    if path == "/healthz/readiness":
        return (200, b"ready") if STATE["ready"] else (503, b"no")
    if path == "/healthz/liveness":
        STATE["checks"] += 1
        return (200, b"alive") if STATE["live"] else (500, b"failing")
    if path == "/healthz/livenessCounter":
        return 200, str(STATE["checks"]).encode()
    return 200, b"hello"


def app(environ, start_response):
    """The WSGI form, for gunicorn."""
    headers = [
        [key[5:].replace("_", "-").lower(), value]
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    status, body = handle(
        environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["SERVER_PROTOCOL"], headers
    )
    reason = HTTPStatus(status).phrase
    start_response(f"{status} {reason}", [("Content-Length", str(len(body)))])
    return [body]


def serve():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, method):
            headers = [[name, value] for name, value in self.headers.items()]
            status, body = handle(method, self.path, self.request_version, headers)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.answer("GET")

        def do_POST(self):
            self.answer("POST")

        def log_message(self, format, *args):
            print("runtime_contract:", self.requestline, flush=True)

    print(f"runtime_contract: listening on {os.environ['PORT']}", flush=True)
    print("runtime_contract: to stderr", file=sys.stderr, flush=True)
    bind = os.environ.get("CONTRACT_BIND", "127.0.0.1")
    ThreadingHTTPServer((bind, int(os.environ["PORT"])), Handler).serve_forever()


if __name__ == "__main__":
    # Before this app opens anything of its own.
    STATE["descriptors_at_start"] = open_descriptors()
    serve()
