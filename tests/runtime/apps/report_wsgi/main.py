"""A Flask app that reports what its process sees: env, cwd, process group, stdin."""

# These apps run on the seed's virtualenv, whose Dockerfile asks for Python 3.8.
from __future__ import annotations

import os
import sys

from flask import Flask

os.environ.setdefault("SET_BY_THE_APP", "at import")  # as Django's wsgi.py does

print("main imported (stdout)", flush=True)
print("main imported (stderr)", file=sys.stderr, flush=True)

app = Flask(__name__)


@app.route("/report")
def report() -> dict[str, object]:
    print(f"report on {os.environ.get('PORT')} (stdout)", flush=True)
    print(f"report on {os.environ.get('PORT')} (stderr)", file=sys.stderr, flush=True)
    return {
        "env": {name: os.environ[name] for name in sorted(os.environ) if name != "PATH"},
        "cwd": os.getcwd(),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "sid": os.getsid(0),
        "stdin": sys.stdin.read(),
    }
