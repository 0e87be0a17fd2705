"""A private renderer: it turns the text it is sent into HTML. Deployed with
--no-allow-unauthenticated, only callers holding roles/run.invoker reach it."""

import html

from flask import Flask, request

app = Flask(__name__)


@app.post("/")
def render():
    text = request.get_data(as_text=True)
    return "<p>" + html.escape(text) + "</p>\n", {"Content-Type": "text/html"}
