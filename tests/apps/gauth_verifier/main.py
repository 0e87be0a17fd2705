"""A service that checks who calls it itself, as an app that receives push requests checks
their token: google.oauth2.id_token.verify_token against the platform's published keys (a JWK
set, which google-auth reads with PyJWT).

GET /  (X-Caller-Token: ID token)  -> JSON: the verified email, sub and issuer; 401 otherwise

Env: AUDIENCE, this service's URL (the audience its callers' tokens must name). The keys are
served beside the metadata server, at http://$GCE_METADATA_HOST/oauth2/v3/certs.
"""

import os

import google.auth.exceptions
import google.auth.transport.requests
import jwt
from flask import Flask, request
from google.oauth2 import id_token

app = Flask(__name__)
AUDIENCE = os.environ["AUDIENCE"]
CERTS_URL = f"http://{os.environ['GCE_METADATA_HOST']}/oauth2/v3/certs"


@app.get("/")
def whoami():
    token = request.headers.get("X-Caller-Token", "")
    if not token:
        return {"error": "send an ID token in X-Caller-Token"}, 401
    try:
        claims = id_token.verify_token(
            token,
            google.auth.transport.requests.Request(),
            audience=AUDIENCE,
            certs_url=CERTS_URL,
        )
    except (ValueError, google.auth.exceptions.GoogleAuthError, jwt.PyJWTError) as error:
        return {"error": f"{type(error).__name__}: {error}"}, 401
    return {
        "email": claims["email"],
        "email_verified": claims["email_verified"],
        "sub": claims["sub"],
        "iss": claims["iss"],
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
