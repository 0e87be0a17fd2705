"""Structured logs tied to their request, as Cloud Run's logging samples write them: the trace id
comes from X-Cloud-Trace-Context, the project from the metadata server, and each JSON line
carries logging.googleapis.com/trace so that it sits under its request in the log viewer.

GET /  -> JSON: the trace headers the app received and the trace its log line named
"""

import json
import os

import requests
from flask import Flask, request

app = Flask(__name__)


def project_id():
    url = f"http://{os.environ['GCE_METADATA_HOST']}/computeMetadata/v1/project/project-id"
    return requests.get(url, headers={"Metadata-Flavor": "Google"}, timeout=10).text


PROJECT = project_id()


@app.get("/")
def index():
    header = request.headers.get("X-Cloud-Trace-Context", "")
    trace = header.split("/")[0]
    entry = {
        "severity": "NOTICE",
        "message": "handled a request",
        "component": "tracer",
        "logging.googleapis.com/trace": f"projects/{PROJECT}/traces/{trace}",
        "logging.googleapis.com/labels": {"handler": "index"},
    }
    print(json.dumps(entry), flush=True)
    return {
        "x_cloud_trace_context": header,
        "traceparent": request.headers.get("traceparent", ""),
        "trace": entry["logging.googleapis.com/trace"],
    }


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
