"""A public editor that calls the private renderer as Cloud Run's service-to-service samples
do: an ID token for the renderer's URL from the metadata server (google-auth), sent as a
bearer token to that URL."""

import os

import google.auth.transport.requests
import google.oauth2.id_token
import requests
from flask import Flask, request

app = Flask(__name__)
RENDERER_URL = os.environ["EDITOR_UPSTREAM_RENDER_URL"]


@app.post("/render")
def render():
    auth_request = google.auth.transport.requests.Request()
    token = google.oauth2.id_token.fetch_id_token(auth_request, RENDERER_URL)
    answer = requests.post(
        RENDERER_URL,
        data=request.get_data(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return answer.text, answer.status_code, {"Content-Type": answer.headers["Content-Type"]}
