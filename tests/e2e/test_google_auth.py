"""Google's own client library in instances, with no configuration: google.auth.default() finds
the project, fetch_id_token() gets a token a private service's router accepts, and an app
checks its caller's token with verify_token against the platform's published keys.

The apps (tests/apps/gauth_*) are written as Cloud Run's samples are (Flask, google-auth,
requests). The editor calls the other services by their URLs, http://SERVICE.localhost:PORT,
which resolve to the router inside instances; they are the tokens' audiences too.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fakes import free_port
from jwt.api_jwk import PyJWKSet

from .harness import APPS, HOMERUN, Platform, describe, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECT = "homerun-e2e"
EDITOR_ACCOUNT = f"editor-sa@{PROJECT}.iam.gserviceaccount.com"
INVOKER = "roles/run.invoker"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """A daemon whose project is homerun-e2e, with the three services deployed."""
    config = {"stop-grace-seconds": 2, "project": PROJECT}
    home = tmp_path_factory.mktemp("google-auth") / "home"
    with running_platform(home, venv_cache, config) as platform:
        renderer = platform.deploy(
            "renderer", APPS / "gauth_renderer", "--no-allow-unauthenticated"
        )
        assert renderer.returncode == 0, describe(renderer)
        platform.deploy_ok(
            "verifier", APPS / "gauth_verifier",
            "--set-env-vars", f"AUDIENCE={platform.url('verifier')}",
        )  # fmt: skip
        platform.deploy_ok(
            "editor", APPS / "gauth_editor",
            "--service-account", EDITOR_ACCOUNT,
            "--set-env-vars",
            f"EDITOR_UPSTREAM_RENDER_URL={platform.url('renderer')},"
            f"VERIFIER_URL={platform.url('verifier')}",
        )  # fmt: skip
        platform.deploy_ok("tracer", APPS / "gauth_tracer")
        yield platform


def answer(platform: Platform, service: str, method: str, path: str, **kwargs: Any) -> Any:
    response = platform.request(service, method, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_application_default_credentials_find_the_project_and_the_account(
    cloud: Platform,
) -> None:
    found = answer(cloud, "editor", "GET", "/project")
    assert found["project"] == PROJECT
    assert found["email"] == EDITOR_ACCOUNT
    assert found["token"] == "ya29."  # an access token: refresh() worked
    assert found["metadata_host"] == found["metadata_ip"]
    assert found["metadata_host"].startswith("127.0.0.1:")


def test_an_id_token_from_fetch_id_token_opens_a_private_service(cloud: Platform) -> None:
    refused = answer(cloud, "editor", "POST", "/render", content=b"hello <world>")
    assert refused["status"] == 403, refused  # a valid token, of an account not yet invoker
    assert f"serviceAccount:{EDITOR_ACCOUNT}" in refused["body"]
    cloud.run(
        "services", "add-iam-policy-binding", "renderer",
        f"--member=serviceAccount:{EDITOR_ACCOUNT}", f"--role={INVOKER}", check=True,
    )  # fmt: skip
    rendered = answer(cloud, "editor", "POST", "/render", content=b"hello <world>")
    assert rendered["status"] == 200, rendered
    body = httpx.Response(200, content=rendered["body"]).json()
    assert body["html"] == "<p>hello &lt;world&gt;</p>"
    assert body["caller"] == EDITOR_ACCOUNT
    assert body["sub"] == f"serviceAccount:{EDITOR_ACCOUNT}"


def test_a_jobs_task_calls_a_private_service_with_an_id_token(cloud: Platform) -> None:
    """A job's task finds the metadata server as an instance does: google.auth.default() and
    fetch_id_token() work, as the job's service account."""
    account = f"batch-sa@{PROJECT}.iam.gserviceaccount.com"
    cloud.run(
        "services", "add-iam-policy-binding", "renderer",
        f"--member=serviceAccount:{account}", f"--role={INVOKER}", check=True,
    )  # fmt: skip
    created = cloud.run(
        "jobs", "create", "batch", "--source", str(APPS / "gauth_job"),
        "--service-account", account, "--max-retries", "0",
        "--set-env-vars", f"TARGET_URL={cloud.url('renderer')}",
        timeout=270,
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    executed = cloud.run("jobs", "execute", "batch", "--wait", timeout=120)
    logs = cloud.run("jobs", "logs", "read", "batch", check=True).stdout
    assert executed.returncode == 0, describe(executed) + logs
    line = next(text for text in logs.splitlines() if '"status"' in text)
    found = json.loads(line[line.index("{") :])
    assert found["project"] == PROJECT and found["email"] == account, found
    assert found["status"] == 200, found
    assert json.loads(found["body"])["caller"] == account


def test_service_hosts_resolve_to_the_router_inside_instances(cloud: Platform) -> None:
    """Any host under .localhost reaches the router from an instance, as from a browser: an
    unknown service gets the router's own 404, a tag URL its revision."""
    unknown = cloud.url("nothing")
    fetched = answer(cloud, "editor", "GET", "/fetch", params={"url": unknown})
    assert fetched["status"] == 404 and "no service answers" in fetched["body"], fetched
    deployed = cloud.deploy("verifier", APPS / "gauth_verifier", "--no-traffic", "--tag", "blue",
                            "--set-env-vars", f"AUDIENCE={cloud.url('verifier')}")  # fmt: skip
    assert deployed.returncode == 0, describe(deployed)
    tag_url = f"http://blue---verifier.localhost:{cloud.port}/"
    fetched = answer(cloud, "editor", "GET", "/fetch", params={"url": tag_url})
    assert fetched["status"] == 401 and "X-Caller-Token" in fetched["body"], fetched


def test_an_app_checks_its_callers_token_against_the_published_keys(cloud: Platform) -> None:
    # From another instance: the metadata server's token for the verifier's URL.
    called = answer(cloud, "editor", "GET", "/call-verifier")
    assert called["status"] == 200, called
    verified = httpx.Response(200, content=called["body"]).json()
    assert verified["email"] == EDITOR_ACCOUNT and verified["email_verified"] is True
    assert verified["iss"] == f"http://localhost:{cloud.port}"

    # From the host: the CLI's tokens are signed with the same key. A service's own account
    # (no --service-account) is SERVICE@PROJECT.iam.gserviceaccount.com.
    def token(*flags: str) -> str:
        result = cloud.run("auth", "print-identity-token", *flags, check=True)
        return result.stdout.strip().splitlines()[-1]

    mine = token("--impersonate-service-account", "renderer", "--audiences", cloud.url("verifier"))
    seen = cloud.request("verifier", "GET", "/", headers={"X-Caller-Token": mine})
    assert seen.status_code == 200, seen.text
    assert seen.json()["email"] == f"renderer@{PROJECT}.iam.gserviceaccount.com"
    elsewhere = token("--audiences", cloud.url("renderer"))
    refused = cloud.request("verifier", "GET", "/", headers={"X-Caller-Token": elsewhere})
    assert refused.status_code == 401 and "udience" in refused.json()["error"]
    forged = mine[: mine.rindex(".")] + ".AAAA"
    refused = cloud.request("verifier", "GET", "/", headers={"X-Caller-Token": forged})
    assert refused.status_code == 401


def test_the_keys_from_the_host(cloud: Platform) -> None:
    """A client on the host reads the discovery document where OpenID Connect says it is, at
    the issuer (the router's own host), and checks a CLI token with the keys it names; the
    metadata server, where instances read them, serves the same keys."""
    issuer = f"http://localhost:{cloud.port}"
    with httpx.Client(trust_env=False) as http:
        found = http.get(f"{issuer}/.well-known/openid-configuration")
        assert found.status_code == 200 and found.headers["content-type"] == "application/json"
        discovery = found.json()
        assert discovery["issuer"] == issuer
        assert discovery["jwks_uri"] == f"{issuer}/oauth2/v3/certs"
        jwks = http.get(discovery["jwks_uri"]).json()
        # At 127.0.0.1 too; a POST, another path or a service's host get no document.
        assert http.get(f"http://127.0.0.1:{cloud.port}/oauth2/v3/certs").json() == jwks
        assert http.post(f"{issuer}/oauth2/v3/certs").status_code == 404
        assert http.get(f"{issuer}/other").status_code == 404
        metadata_host = answer(cloud, "editor", "GET", "/project")["metadata_host"]
        assert http.get(f"http://{metadata_host}/oauth2/v3/certs").json() == jwks
    wrong = cloud.request("verifier", "GET", "/.well-known/openid-configuration")
    assert wrong.status_code == 404 and "issuer" not in wrong.text  # the app's own (Flask's)
    result = cloud.run("auth", "print-identity-token", "--audiences", cloud.url("x"), check=True)
    token = result.stdout.strip().splitlines()[-1]
    (key,) = PyJWKSet.from_dict(jwks).keys
    claims = jwt.decode(
        token, key.key, algorithms=["RS256"], audience=cloud.url("x"), issuer=discovery["issuer"]
    )
    assert claims["sub"].startswith("user:") and claims["azp"] == claims["sub"]


def log_entries(platform: Platform, service: str, *flags: str) -> list[dict[str, Any]]:
    result = platform.run("logs", "read", service, "--format", "json", *flags, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def entries_of_trace(platform: Platform, trace_id: str) -> list[dict[str, Any]]:
    """The request's log entry and the app's line, once both are written (the request log is
    written by the next second's batch)."""
    deadline = time.monotonic() + 15
    while True:
        entries = log_entries(platform, "tracer", "--trace", trace_id)
        if len(entries) >= 2 or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)


@pytest.mark.parametrize("sent", ["traceparent", "x-cloud-trace-context", None])
def test_an_apps_log_lines_and_its_request_log_share_a_trace(
    cloud: Platform, sent: str | None
) -> None:
    trace_id = secrets.token_hex(16)
    headers = {
        "traceparent": {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        "x-cloud-trace-context": {"X-Cloud-Trace-Context": f"{trace_id}/12345;o=1"},
        None: {},
    }[sent]
    seen = answer(cloud, "tracer", "GET", "/", headers=headers)
    if sent is None:  # the router started a trace: both headers name it
        trace_id = seen["x_cloud_trace_context"].split("/")[0]
    assert seen["x_cloud_trace_context"].startswith(f"{trace_id}/")
    assert seen["traceparent"].split("-")[1] == trace_id
    full = f"projects/{PROJECT}/traces/{trace_id}"
    assert seen["trace"] == full
    entries = entries_of_trace(cloud, trace_id)
    request_log, app_line = sorted(entries, key=lambda entry: "httpRequest" not in entry)
    assert request_log["trace"] == full and request_log["httpRequest"]["status"] == 200
    assert request_log["traceSampled"] is True
    spans = {"traceparent": "00f067aa0ba902b7", "x-cloud-trace-context": f"{12345:016x}"}
    if sent is not None:  # the span the client sent, as traceparent writes it (hex)
        assert request_log["spanId"] == spans[sent]
    assert app_line["trace"] == full and app_line["severity"] == "NOTICE"
    assert app_line["labels"] == {"handler": "index"}
    assert app_line["jsonPayload"] == {
        "severity": "NOTICE", "message": "handled a request", "component": "tracer"
    }  # fmt: skip
    assert len(entries) == 2, entries  # no other request's entries


def test_services_proxy_reaches_a_private_service_as_its_caller(cloud: Platform) -> None:
    """`homerun services proxy renderer`: a plain client (no token) on the local port gets the
    private service's answer, made with the caller's identity; without the proxy, 401."""
    refused = cloud.request("renderer", "POST", "/", content=b"x")
    assert refused.status_code == 401
    port = free_port()
    process = subprocess.Popen(
        [*HOMERUN, "services", "proxy", "renderer", "--port", str(port), "--region", "local"],
        env=cloud.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline() + process.stdout.readline()
        assert f"http://127.0.0.1:{port} proxies to {cloud.url('renderer')}" in banner, banner
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            answered = http.post("/", content=b"a < b", timeout=30)
            assert answered.status_code == 200, answered.text
            assert answered.json()["html"] == "<p>a &lt; b</p>"
            assert answered.json()["sub"].startswith("user:")
            # The app's own Authorization header passes unchanged beside the proxy's token.
            own = http.post("/", content=b"y", headers={"Authorization": "Basic abc"})
            assert own.status_code == 200 and own.json()["sub"].startswith("user:")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert process.returncode in (0, -signal.SIGTERM), process.returncode
