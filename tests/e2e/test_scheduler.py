"""Scheduler jobs on a real daemon: a private service receives the scheduled call with a valid
ID token of the job's service account (the router lets it through) and records it; a job
without one is refused by the router; pause and resume; the jobs and their calls survive a
daemon restart. (Which runs are made when is tested with a fake clock in
tests/control/test_scheduler.py: here `run` calls now.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .harness import Platform, describe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EMAIL = "scheduler@homerun-local.iam.gserviceaccount.com"
# A private service that records each request it gets: method, path, body, Authorization.
RECORDER = """\
import json
import time
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        record = {
            "method": self.command,
            "path": self.path,
            "body": body,
            "authorization": self.headers.get("Authorization"),
            "user_agent": self.headers.get("User-Agent"),
            "job": self.headers.get("X-Job"),
        }
        print("RECORD " + json.dumps(record), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


ThreadingHTTPServer(("", int(os.environ["PORT"])), Recorder).serve_forever()
"""


def test_a_scheduled_call_reaches_a_private_service_with_an_id_token(
    own_platform: Platform, tmp_path: Path
) -> None:
    platform = own_platform
    app = tmp_path / "recorder"
    app.mkdir()
    (app / "main.py").write_text(RECORDER)
    (app / "Procfile").write_text("web: python main.py\n")
    platform.deploy_ok("recorder", app, "--no-allow-unauthenticated")
    bound = platform.run(
        "services", "add-iam-policy-binding", "recorder",
        "--member", f"serviceAccount:{EMAIL}", "--role", "roles/run.invoker",
    )  # fmt: skip
    assert bound.returncode == 0, describe(bound)
    url = platform.url("recorder")
    created = platform.run(
        "scheduler", "jobs", "create", "http", "nightly", "--schedule", "0 3 * * *",
        "--time-zone", "Europe/Paris", "--uri", f"{url}/run?from=scheduler",
        "--message-body", '{"report": "daily"}', "--headers", "X-Job=nightly",
        "--oidc-service-account-email", EMAIL,
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    assert "Created scheduler job [nightly]." in created.stdout
    ran = platform.run("scheduler", "jobs", "run", "nightly")
    assert ran.returncode == 0, describe(ran)
    assert "Ran [nightly]: 200" in ran.stdout
    [record] = recorded(platform, 1)
    assert record["method"] == "POST" and record["path"] == "/run?from=scheduler"
    assert record["body"] == '{"report": "daily"}' and record["job"] == "nightly"
    assert record["user_agent"] == "Google-Cloud-Scheduler"
    assert record["authorization"].startswith("Bearer ey"), record

    # Without a service account, the call has no token: the router refuses it (403 or 401).
    anonymous = platform.run(
        "scheduler", "jobs", "create", "http", "anonymous", "--schedule", "*/5 * * * *",
        "--uri", f"{url}/run",
    )  # fmt: skip
    assert anonymous.returncode == 0, describe(anonymous)
    refused = platform.run("scheduler", "jobs", "run", "anonymous")
    assert refused.returncode == 1, describe(refused)
    assert "FAILED: HTTP 40" in refused.stdout, refused.stdout
    assert len(recorded(platform, 1)) == 1  # it never reached the service

    # A URL beyond this machine is refused when the job is created.
    elsewhere = platform.run(
        "scheduler", "jobs", "create", "http", "elsewhere", "--schedule", "* * * * *",
        "--uri", "https://example.com/hook",
    )  # fmt: skip
    assert elsewhere.returncode == 1
    assert "example.com is not on this machine" in elsewhere.stderr, describe(elsewhere)

    paused = platform.run("scheduler", "jobs", "pause", "nightly")
    assert paused.returncode == 0, describe(paused)
    described = platform.run("scheduler", "jobs", "describe", "nightly").stdout
    assert "State:         PAUSED" in described and "none while paused" in described

    # The jobs, their state and their calls survive a restart.
    platform.down()
    platform.start()
    after = json.loads(
        platform.run("scheduler", "jobs", "describe", "nightly", "--format", "json").stdout
    )
    assert after["state"] == "PAUSED" and after["time_zone"] == "Europe/Paris"
    assert [attempt["status_code"] for attempt in after["attempts"]] == [200]
    resumed = platform.run("scheduler", "jobs", "resume", "nightly")
    assert resumed.returncode == 0 and "Next run: " in resumed.stdout, describe(resumed)
    listed = platform.run("scheduler", "jobs", "list").stdout
    assert "nightly" in listed and "ENABLED" in listed and "anonymous" in listed
    again = platform.run("scheduler", "jobs", "run", "nightly")
    assert again.returncode == 0, describe(again)  # a new daemon's token is as good
    assert len(recorded(platform, 2)) == 2
    deleted = platform.run("scheduler", "jobs", "delete", "anonymous", "-q")
    assert deleted.returncode == 0, describe(deleted)
    assert "anonymous" not in platform.run("scheduler", "jobs", "list").stdout


def recorded(platform: Platform, at_least: int) -> list[dict[str, Any]]:
    """The recorder's records, from its log (kept across restarts; a sandboxed app shares no
    folder with the test), once there are `at_least` of them (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        log = platform.home / "logs" / "recorder.jsonl"
        records = []
        for path in (log.with_suffix(".jsonl.1"), log):
            for line in path.read_bytes().splitlines() if path.exists() else []:
                message = json.loads(line).get("message", "")
                if message.startswith("RECORD "):
                    records.append(json.loads(message.removeprefix("RECORD ")))
        if len(records) >= at_least or time.monotonic() > deadline:
            return records
        time.sleep(0.1)
