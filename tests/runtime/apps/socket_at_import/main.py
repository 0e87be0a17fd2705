"""Opens a socket while it is imported (a database connection, say): forks would share it."""

# These apps run on the seed's virtualenv, whose Dockerfile asks for Python 3.8.
from __future__ import annotations

import socket

from flask import Flask

connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    return "hello"
