"""Starts a thread while it is imported: a forked copy would not have it."""

# These apps run on the seed's virtualenv, whose Dockerfile asks for Python 3.8.
from __future__ import annotations

import threading
import time

from flask import Flask

threading.Thread(target=time.sleep, args=(3600,), name="cache-warmer", daemon=True).start()

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "hello"
