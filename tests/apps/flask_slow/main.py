"""A Flask app with a slow endpoint and no entrypoint: homerun's default gunicorn command
serves it, so a test can see how many requests that command takes at once."""

import os
import time

from flask import Flask, request

app = Flask(__name__)


@app.get("/slow")
def slow():
    seconds = min(float(request.args.get("seconds", "2")), 10.0)
    time.sleep(seconds)
    return {"pid": os.getpid(), "slept": seconds}
