"""Cloud Run functions on a real daemon: `homerun deploy --function` (and GOOGLE_FUNCTION_TARGET
in project.toml or the env) served by functions-framework from PyPI, installed because the
source does not list it; the three signature types (HTTP, CloudEvents in binary and structured
mode, legacy background events), a streamed response, an async function on another Python
(`--base-image python312`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from homerun.build.interpreter import python_for_base_image
from homerun.errors import BuildError

from .harness import APPS, Platform, describe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FUNCTIONS = APPS / "functions"


def latest_revision(platform: Platform, service: str) -> dict[str, Any]:
    revisions: list[dict[str, Any]] = platform.describe_service(service)["revisions"]
    return revisions[0]


def test_an_http_function_answers_as_googles_sample_does(platform: Platform) -> None:
    result = platform.ensure_deployed("hello-http", FUNCTIONS, "--function", "hello_http")
    # functions-framework is not in the folder: the build adds it, and says so.
    assert "functions-framework (it serves the function)" in result.stdout + result.stderr
    assert platform.request("hello-http", "GET", "/").text == "Hello World!"
    assert platform.request("hello-http", "GET", "/any/path?name=Ada").text == "Hello Ada!"
    posted = platform.request("hello-http", "POST", "/", json={"name": "Grace"})
    assert (posted.status_code, posted.text) == (200, "Hello Grace!")
    revision = latest_revision(platform, "hello-http")
    assert revision["annotations"]["run.googleapis.com/build-function-target"] == "hello_http"
    assert "http function hello_http in main.py (--function)" in revision["entrypoint_origin"]
    # A zygote imports the function once; instances are forked from it.
    assert revision["start_mode"]["mode"] == "zygote", revision["start_mode"]


def test_cloudevents_reach_the_function_in_binary_and_structured_mode(
    platform: Platform,
) -> None:
    platform.ensure_deployed("hello-events", FUNCTIONS, "--function", "hello_cloud_event")
    binary = platform.request(
        "hello-events",
        "POST",
        "/",
        headers={
            "ce-id": "binary-1",
            "ce-specversion": "1.0",
            "ce-type": "google.cloud.storage.object.v1.finalized",
            "ce-source": "//storage.googleapis.com/projects/_/buckets/b",
            "Content-Type": "application/json",
        },
        json={"bucket": "b", "name": "file.txt"},
    )
    assert binary.status_code == 200, binary.text
    structured = platform.request(
        "hello-events",
        "POST",
        "/",
        headers={"Content-Type": "application/cloudevents+json"},
        content=json.dumps(
            {
                "specversion": "1.0",
                "id": "structured-2",
                "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "source": "//pubsub.googleapis.com/projects/p/topics/t",
                "data": {"message": {"data": "aGk="}},
            }
        ),
    )
    assert structured.status_code == 200, structured.text
    not_an_event = platform.request("hello-events", "POST", "/", json={"hello": 1})
    assert not_an_event.status_code == 400, not_an_event.text

    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 15
    while len(seen) < 2 and time.monotonic() < deadline:
        logs = platform.run("logs", "read", "hello-events", "--limit", "50", "--format", "json")
        assert logs.returncode == 0, describe(logs)
        for line in logs.stdout.splitlines():
            entry = json.loads(line)
            if str(entry.get("message", "")).startswith("cloud event "):
                payload = entry["jsonPayload"]  # the line was a JSON object: its fields
                seen[payload["id"]] = payload
        time.sleep(0.2)
    assert seen["binary-1"]["data"] == {"bucket": "b", "name": "file.txt"}
    assert seen["binary-1"]["type"] == "google.cloud.storage.object.v1.finalized"
    assert seen["structured-2"]["data"] == {"message": {"data": "aGk="}}
    assert seen["structured-2"]["source"] == "//pubsub.googleapis.com/projects/p/topics/t"


def test_a_background_function_gets_legacy_events(platform: Platform) -> None:
    """The third signature type, `event`: a function of (data, context)."""
    platform.ensure_deployed(
        "hello-background", FUNCTIONS, "--function", "hello_background",
        "--set-env-vars", "GOOGLE_FUNCTION_SIGNATURE_TYPE=event",
    )  # fmt: skip
    answer = platform.request(
        "hello-background",
        "POST",
        "/",
        json={
            "context": {
                "eventId": "legacy-3",
                "timestamp": "2026-12-05T08:00:00.000Z",
                "eventType": "google.pubsub.topic.publish",
                "resource": "projects/p/topics/t",
            },
            "data": {"data": "aGk="},
        },
    )
    assert (answer.status_code, answer.text) == (200, "OK")
    found = None
    deadline = time.monotonic() + 15
    while found is None and time.monotonic() < deadline:
        logs = platform.run("logs", "read", "hello-background", "--limit", "50", "--format", "json")
        for line in logs.stdout.splitlines():
            payload = json.loads(line).get("jsonPayload") or {}
            if payload.get("event_id") == "legacy-3":
                found = payload
        time.sleep(0.2)
    assert found is not None, "the function never logged the event"
    assert found["event_type"] == "google.pubsub.topic.publish"
    assert found["data"] == {"data": "aGk="}


def test_a_streaming_function_streams(platform: Platform) -> None:
    platform.ensure_deployed("hello-stream", FUNCTIONS, "--function", "hello_stream")
    arrivals = []
    with (
        platform.client("hello-stream") as client,
        client.stream("GET", "/", params={"count": "5"}) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                arrivals.append((time.monotonic(), line))
    assert [line.split(" at ")[0] for _, line in arrivals] == [f"line {i}" for i in range(5)]
    # The function sleeps 200 ms between lines: buffered, they would all come at once.
    assert arrivals[-1][0] - arrivals[0][0] > 0.6, arrivals


def test_an_async_function_named_in_project_toml_runs_on_the_base_image(
    platform: Platform,
) -> None:
    try:
        python_for_base_image("python312")
    except BuildError as error:  # this machine has pyenv's 3.12; another may not
        pytest.skip(str(error))
    result = platform.ensure_deployed(
        "hello-async", APPS / "functions_aio", "--base-image", "python312"
    )
    assert "with Python 3.12." in result.stdout + result.stderr, describe(result)
    answer = platform.request("hello-async", "GET", "/", params={"name": "Ada"})
    assert (answer.status_code, answer.text) == (200, "Hello Ada from an async function!")
    revision = latest_revision(platform, "hello-async")
    assert "hello_async in main.py (project.toml)" in revision["entrypoint_origin"]


def test_the_target_can_come_from_the_env_with_its_signature_type(platform: Platform) -> None:
    platform.ensure_deployed(
        "plain-target", FUNCTIONS, "--set-env-vars", "GOOGLE_FUNCTION_TARGET=plain_target"
    )
    answer = platform.request("plain-target", "PUT", "/some/where")
    assert answer.json() == {"path": "/some/where", "method": "PUT"}


def test_a_missing_target_fails_the_deploy_naming_the_functions_there(
    platform: Platform, tmp_path: Path
) -> None:
    result = platform.deploy("no-such-function", FUNCTIONS, "--function", "hello_wrld")
    assert result.returncode == 1, describe(result)
    assert "function hello_wrld is not defined in main.py (functions there: " in result.stderr
    assert "hello_http" in result.stderr
    bad_image = platform.deploy("bad-image", FUNCTIONS, "--function", "hello_http",
                                "--base-image", "nodejs22")  # fmt: skip
    assert bad_image.returncode == 1, describe(bad_image)
    assert "--base-image nodejs22: homerun runs Python base images" in bad_image.stderr
