"""Who may call a service, through the CLI and real HTTP: private by default, ID tokens, IAM
bindings, service-to-service calls with the metadata server, internal ingress, the admin
API's socket and its TCP listener."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import (
    APPS,
    HOMERUN,
    Platform,
    describe,
    free_port,
    host_pid,
    process_environ,
    running_platform,
)

pytestmark = pytest.mark.e2e

WHOAMI = APPS / "whoami"
INVOKER = "roles/run.invoker"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """A daemon with the TCP admin listener on."""
    admin_port = free_port()
    config = {"stop-grace-seconds": 2, "admin-listen": f"127.0.0.1:{admin_port}"}
    home = tmp_path_factory.mktemp("access") / "home"
    with running_platform(home, venv_cache, config) as platform:
        platform.admin_port = admin_port  # type: ignore[attr-defined]
        yield platform


def token(platform: Platform, *flags: str) -> str:
    """`homerun auth print-identity-token`: the token alone on the last line."""
    result = platform.run("auth", "print-identity-token", *flags, check=True)
    last = result.stdout.strip().splitlines()[-1]
    assert last.count(".") == 2 and " " not in last, describe(result)
    return last


def get(
    platform: Platform, service: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return platform.request(service, "GET", "/", headers=headers, **kwargs)


def claims_of(authorization: str) -> dict[str, Any]:
    """The claims an app reads from a token whose signature the router removed."""
    _, payload, signature = authorization.removeprefix("Bearer ").split(".")
    assert signature == "SIGNATURE_REMOVED_BY_HOMERUN"
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


def iam(platform: Platform, change: str, service: str, member: str) -> None:
    platform.run(
        "services", f"{change}-iam-policy-binding", service, f"--member={member}",
        f"--role={INVOKER}", check=True,
    )  # fmt: skip


def test_a_new_service_is_private_without_the_flag(guarded: Platform) -> None:
    # Neither flag, and no terminal: private (`run`, not the harness's public deploy).
    result = guarded.run("deploy", "private", "--source", str(WHOAMI), timeout=240)
    assert result.returncode == 0, describe(result)
    refused = get(guarded, "private")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "print-identity-token" in refused.text

    # The platform's owner (this OS user) may invoke every service, as a project owner may.
    mine = token(guarded)
    answered = get(guarded, "private", mine)
    assert answered.status_code == 200, answered.text
    seen = answered.json()["authorization"]
    assert seen != f"Bearer {mine}" and claims_of(seen)["sub"].startswith("user:")

    # A valid token of someone who is not an invoker: 403, until a binding says so.
    bob = token(guarded, "--account", "bob", "--audiences", guarded.url("private"))
    assert get(guarded, "private", bob).status_code == 403
    iam(guarded, "add", "private", "user:bob")
    assert get(guarded, "private", bob).status_code == 200
    policy = guarded.run("services", "get-iam-policy", "private", "--format", "json", check=True)
    assert json.loads(policy.stdout)["bindings"] == [{"members": ["user:bob"], "role": INVOKER}]
    iam(guarded, "remove", "private", "user:bob")
    assert get(guarded, "private", bob).status_code == 403

    # A token for another service's URL, a forged one, an expired-looking garbage: 401.
    other = token(guarded, "--audiences", guarded.url("elsewhere"))
    assert get(guarded, "private", other).status_code == 401
    forged = mine[: mine.rindex(".")] + ".AAAA"
    assert get(guarded, "private", forged).status_code == 401

    # allUsers is --allow-unauthenticated.
    iam(guarded, "add", "private", "allUsers")
    assert get(guarded, "private").status_code == 200
    iam(guarded, "remove", "private", "allUsers")
    assert get(guarded, "private").status_code == 401
    described = guarded.describe_service("private")
    assert described["allow_unauthenticated"] is False and described["invokers"] == []


def test_allow_unauthenticated_and_back(guarded: Platform) -> None:
    guarded.deploy_ok("flip", WHOAMI)  # the harness adds --allow-unauthenticated
    assert get(guarded, "flip").status_code == 200
    result = guarded.deploy("flip", WHOAMI, "--no-allow-unauthenticated")
    assert result.returncode == 0, describe(result)
    assert get(guarded, "flip").status_code == 401
    assert get(guarded, "flip", token(guarded)).status_code == 200


def test_a_service_calls_another_with_a_token_from_the_metadata_server(
    guarded: Platform,
) -> None:
    backend = guarded.deploy(
        "backend", WHOAMI, "--no-allow-unauthenticated", "--ingress", "internal"
    )
    assert backend.returncode == 0, describe(backend)
    guarded.deploy_ok("frontend", WHOAMI)
    router = f"http://127.0.0.1:{guarded.port}/"

    def call(with_token: bool) -> dict[str, Any]:
        params = {"url": router, "host": guarded.host("backend")}
        if with_token:
            params["token"] = "metadata"
        response = guarded.request("frontend", "GET", "/call", params=params)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    # Internal ingress: this test process is no instance, whatever token it has.
    outside = get(guarded, "backend", token(guarded))
    assert outside.status_code == 403 and "internal" in outside.text
    # From an instance: past the ingress check, then IAM as for anyone.
    assert call(with_token=False)["status"] == 401
    assert call(with_token=True)["status"] == 403
    iam(guarded, "add", "backend", "serviceAccount:frontend")
    reached = call(with_token=True)
    assert reached["status"] == 200, reached
    seen = json.loads(reached["body"])
    assert claims_of(seen["authorization"])["sub"] == "serviceAccount:frontend"
    assert claims_of(seen["authorization"])["aud"] == guarded.url("backend")

    # The metadata server gives nothing to a process that is not an instance.
    assert guarded.describe_service("frontend")["ingress"] == "all"
    status = guarded.request("frontend", "GET", "/token", params={"audience": "http://x"}).json()
    metadata_base = _metadata_url(guarded, "frontend")
    direct = httpx.get(
        f"{metadata_base}/instance/service-accounts/default/identity",
        params={"audience": "http://x"},
        headers={"Metadata-Flavor": "Google"},
        trust_env=False,
    )
    assert status["status"] == 200 and direct.status_code == 403

    # Ingress back to all: the owner's token works from here again.
    update = guarded.run("services", "update", "backend", "--ingress", "all", check=True)
    assert "ingress set to all" in update.stdout
    assert get(guarded, "backend", token(guarded)).status_code == 200


def _metadata_url(platform: Platform, service: str) -> str:
    """HOMERUN_METADATA_URL as the service's instance got it (from its /proc environ)."""
    pid = host_pid(get(platform, service).json()["pid"], service)
    return process_environ(pid)["HOMERUN_METADATA_URL"]


def test_the_admin_api_socket_and_tcp_listener(guarded: Platform) -> None:
    for name in ("admin.sock", "admin-token", "signing-key"):
        mode = stat.S_IMODE((guarded.home / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    port = guarded.admin_port  # type: ignore[attr-defined]
    admin_token = (guarded.home / "admin-token").read_text().strip()
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/v1/status", trust_env=False).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{url}/v1/status", headers=wrong, trust_env=False).status_code == 401
    right = {"Authorization": f"Bearer {admin_token}"}
    assert httpx.get(f"{url}/v1/status", headers=right, trust_env=False).status_code == 200

    # The CLI from elsewhere: another HOMERUN_HOME, HOMERUN_URL and the token.
    env = dict(guarded.env, HOMERUN_HOME=str(guarded.home.parent / "elsewhere"))
    env.update(HOMERUN_URL=url, HOMERUN_TOKEN=admin_token)
    remote = subprocess.run(
        [*HOMERUN, "services", "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert remote.returncode == 0, describe(remote)
    assert "private" in remote.stdout or "flip" in remote.stdout or "No services" in remote.stdout
    env["HOMERUN_TOKEN"] = "wrong"
    refused = subprocess.run(
        [*HOMERUN, "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "admin token" in refused.stderr


def test_deploy_asks_on_a_terminal(guarded: Platform) -> None:
    """As gcloud: a new service, neither flag, a terminal: the question; `y` makes it public."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [*HOMERUN, "deploy", "asked", "--source", str(WHOAMI)],
        env=guarded.env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"(y/N)?" not in output:
            assert time.monotonic() < deadline, output
            readable, _, _ = select.select([primary], [], [], 1)
            if readable:
                output += os.read(primary, 4096)
        assert b"Allow unauthenticated invocations to [asked] (y/N)?" in output
        os.write(primary, b"y\n")
        process.wait(120)
        with_rest = _drain(primary)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(primary)
    assert process.returncode == 0, (output + with_rest).decode(errors="replace")
    assert get(guarded, "asked").status_code == 200
    # Not new any more: no question, and access stays as it is.
    again = guarded.run("deploy", "asked", "--source", str(WHOAMI))
    assert again.returncode == 0 and "Allow" not in again.stdout, describe(again)
    assert get(guarded, "asked").status_code == 200


def _drain(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data
