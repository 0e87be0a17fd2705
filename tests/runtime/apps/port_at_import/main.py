"""Reads $PORT while it is imported: every instance has its own."""

# These apps run on the seed's virtualenv, whose Dockerfile asks for Python 3.8.
from __future__ import annotations

import os

from flask import Flask

PORT = os.environ.get("PORT", "8080")

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return f"hello from {PORT}"
