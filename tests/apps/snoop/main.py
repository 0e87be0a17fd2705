"""A Flask app that tries, from inside its instance, what a hostile app would: read files that are
not its own, write its own revision's files, connect to sockets, read other processes' /proc,
signal them, connect to ports, fetch URLs. POST /try with {"op": ..., ...} answers
{"ok": bool, "result" or "error": ...}."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request

from flask import Flask, request

app = Flask(__name__)


def _read(path: str) -> str:
    with open(path, "rb") as opened:
        return opened.read(4096).decode(errors="replace")


def _write(path: str) -> str:
    with open(path, "a") as opened:
        opened.write("# written by the app\n")
    return "written"


def _list(path: str) -> list[str]:
    return sorted(os.listdir(path))


def _connect(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
        unix.connect(path)
    return "connected"


def _tcp(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as tcp:
        tcp.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return tcp.recv(200).decode(errors="replace").split("\r\n", 1)[0]


def _fetch(url: str, headers: dict[str, str]) -> str:
    # Not through a proxy the environment may name: straight to the URL's host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return f"{answer.status} " + answer.read(2000).decode(errors="replace")


def _kill(pid: int) -> str:
    os.kill(pid, signal.SIGCONT)  # harmless if it got through, and proves it could
    return "signalled"


@app.route("/")
def hello() -> str:
    return "hello"


@app.route("/me")
def me() -> dict[str, object]:
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "home": os.environ.get("HOME"),
        "ld_debug": os.environ.get("LD_DEBUG"),
        "pids": sorted(int(name) for name in os.listdir("/proc") if name.isdigit()),
        "no_new_privs": _read("/proc/self/status").count("NoNewPrivs:\t1") == 1,
    }


@app.route("/fill-tmp")
def fill_tmp() -> str:
    # /tmp is a tmpfs: what is written there is memory, the instance's.
    mib = int(request.args.get("mib", "64"))
    with open("/tmp/filler", "wb") as filler:
        for _ in range(mib):
            filler.write(b"x" * (1024 * 1024))
    return f"wrote {mib} MiB to /tmp"


@app.route("/try", methods=["POST"])
def attempt() -> dict[str, object]:
    body = request.get_json(force=True)
    op, path = body["op"], body.get("path", "")
    actions = {
        "read": lambda: _read(path),
        "write": lambda: _write(path),
        "list": lambda: _list(path),
        "connect": lambda: _connect(path),
        "kill": lambda: _kill(int(body["pid"])),
        "tcp": lambda: _tcp(body["host"], int(body["port"])),
        "fetch": lambda: _fetch(body["url"], body.get("headers", {})),
    }
    try:
        return {"ok": True, "result": actions[op]()}
    except Exception as error:  # noqa: BLE001 - the answer is what was refused and how
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
