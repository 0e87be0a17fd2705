"""A Flask app that does what an app should not: detaches a child, eats memory, burns CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from flask import Flask, request

app = Flask(__name__)
hoard: list[bytes] = []


@app.route("/")
def hello() -> str:
    return "hello"


@app.route("/detach")
def detach() -> dict[str, object]:
    # A child in a session of its own, out of the instance's process group.
    # The marker finds it from the host, where a sandboxed app's pid is another number.
    marker = f"detached-{os.getpid()}-{time.monotonic_ns()}"
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", marker],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return {"pid": child.pid, "instance": os.getpid(), "marker": marker}


@app.route("/hog")
def hog() -> str:
    # Touch every page, so that the memory is really used (not only reserved).
    for _ in range(int(request.args.get("mib", "64"))):
        hoard.append(b"x" * (1024 * 1024))
    return f"holding {len(hoard)} MiB"


@app.route("/burn")
def burn() -> dict[str, float]:
    seconds = float(request.args.get("seconds", "1"))
    wall, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - wall < seconds:
        pass
    return {"cpu": time.process_time() - cpu, "wall": time.monotonic() - wall}
