"""A job's task that calls a private service, as Cloud Run's job samples do: Application
Default Credentials from the metadata server, then an ID token for the service's URL.

Env: TARGET_URL, the private service's URL (the token's audience). Prints one JSON line with
what it found and the service's answer; exits 1 when the service does not answer 200.
"""

import json
import os
import sys

import google.auth
import google.auth.transport.requests
import google.oauth2.id_token
import requests

credentials, project_id = google.auth.default()
credentials.refresh(google.auth.transport.requests.Request())
url = os.environ["TARGET_URL"]
token = google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), url)
response = requests.post(
    url, data=b"from a job", headers={"Authorization": f"Bearer {token}"}, timeout=30
)
print(
    json.dumps(
        {
            "project": project_id,
            "email": credentials.service_account_email,
            "status": response.status_code,
            "body": response.text,
        }
    )
)
sys.exit(0 if response.status_code == 200 else 1)
