"""A private renderer, as in Cloud Run's two-service samples: the editor sends it text, it
answers HTML. Only callers holding roles/run.invoker reach it; the platform checked their ID
token, and the app reads who called from the token's claims.

POST /  (body: text)  -> JSON: html, and the caller's email and sub
"""

import base64
import html
import json
import os

from flask import Flask, request

app = Flask(__name__)


def caller_claims(authorization):
    """The claims of the bearer token the platform checked. It removed the signature, so the
    token cannot be replayed; the claims are still there to read."""
    scheme, _, token = authorization.partition(" ")
    parts = token.split(".")
    if scheme.lower() != "bearer" or len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


@app.post("/")
def render():
    text = request.get_data(as_text=True)
    # Cloud Run's X-Serverless-Authorization (what `services proxy` sends) comes first.
    header = request.headers.get("X-Serverless-Authorization") or request.headers.get(
        "Authorization", ""
    )
    claims = caller_claims(header)
    return {
        "html": "<p>" + html.escape(text) + "</p>",
        "caller": claims.get("email"),
        "sub": claims.get("sub"),
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
