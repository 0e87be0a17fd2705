"""Reads $PORT while it is imported: every instance has its own."""

import os

from flask import Flask

PORT = os.environ.get("PORT", "8080")

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return f"hello from {PORT}"
