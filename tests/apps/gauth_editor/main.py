"""An editor, as in Cloud Run's two-service samples: a public front that calls a private
renderer with an ID token for the renderer's URL, from the metadata server through google-auth.

GET  /project        -> what Application Default Credentials find: project, account, a token
POST /render (text)  -> the renderer's answer (status and body)
GET  /call-verifier  -> the verifier's answer to a call with an ID token for its URL

GET  /fetch?url=URL   -> a plain GET of URL (no token): its status and body

Env: EDITOR_UPSTREAM_RENDER_URL and VERIFIER_URL, the services' URLs (the tokens' audiences),
called by those URLs as on Cloud Run (their hosts resolve to the router inside instances).
"""

import os

import google.auth
import google.auth.transport.requests
import google.oauth2.id_token
import requests
from flask import Flask, request

# As many samples do: credentials and project once, at import.
credentials, project_id = google.auth.default()

app = Flask(__name__)
RENDER_URL = os.environ["EDITOR_UPSTREAM_RENDER_URL"]
VERIFIER_URL = os.environ.get("VERIFIER_URL", "")


def call(url, method="GET", token_header="Authorization", data=None):
    """`url` with an ID token for it; returns the answer's status and text."""
    auth_request = google.auth.transport.requests.Request()
    token = google.oauth2.id_token.fetch_id_token(auth_request, url)
    value = f"Bearer {token}" if token_header == "Authorization" else token
    response = requests.request(method, url, headers={token_header: value}, data=data, timeout=30)
    return {"status": response.status_code, "body": response.text}


@app.get("/project")
def project():
    credentials.refresh(google.auth.transport.requests.Request())
    return {
        "project": project_id,
        "email": credentials.service_account_email,
        "token": credentials.token[:5],
        "metadata_host": os.environ.get("GCE_METADATA_HOST"),
        "metadata_ip": os.environ.get("GCE_METADATA_IP"),
    }


@app.get("/fetch")
def fetch():
    response = requests.get(request.args["url"], timeout=30)
    return {"status": response.status_code, "body": response.text}


@app.post("/render")
def render():
    return call(RENDER_URL, "POST", data=request.get_data())


@app.get("/call-verifier")
def call_verifier():
    return call(VERIFIER_URL, token_header="X-Caller-Token")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
