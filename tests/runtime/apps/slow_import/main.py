"""Takes a while to import (a model loaded at startup, say)."""

import time

from flask import Flask

time.sleep(2)

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "hello"
