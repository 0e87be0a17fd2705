"""Takes a while to import (a model loaded at startup, say)."""

# These apps run on the seed's virtualenv, whose Dockerfile asks for Python 3.8.
from __future__ import annotations

import time

from flask import Flask

time.sleep(2)

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "hello"
