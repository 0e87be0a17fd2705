"""schemathesis against the admin API's OpenAPI description, on a real daemon's TCP admin
listener with the admin token: no request may get a 5xx, and the daemon keeps serving
(HOMERUN_FUZZ_EXAMPLES sets the examples per operation, 30 by default).

Deploys and `services replace` are left out: a generated body may name any folder as its
source, and a build of `/` would copy the machine. Their bodies are validated by the models
that test_spec.py and test_knative.py fuzz with hypothesis. /v1/shutdown is left out too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from homerun.admin.openapi import openapi_document

from .harness import APPS, Platform, free_port, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEFT_OUT = ["/v1/shutdown", "/v1/services/{name}/deploy"]


class Admin:
    def __init__(self, platform: Platform, url: str, token: str) -> None:
        self.platform = platform
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Admin]:
    port = free_port()
    config = {"admin-listen": f"127.0.0.1:{port}", "stop-grace-seconds": 2}
    home = tmp_path_factory.mktemp("admin-fuzz") / "home"
    with running_platform(home, venv_cache, config) as platform:
        # Something to find: a service with a revision, a secret, a binding.
        platform.deploy_ok("fuzzed", APPS / "whoami")
        secret = APPS / "whoami" / "Procfile"
        platform.run("secrets", "create", "fuzzed", "--data-file", str(secret), check=True)
        token = (home / "admin-token").read_text().strip()
        yield Admin(platform, f"http://127.0.0.1:{port}", token)


# The description the daemon serves at /v1/openapi.json (test_the_description_is_served
# checks they are the same); loaded here so that the cases exist before the daemon does.
schema = (
    schemathesis.openapi.from_dict(openapi_document())
    .exclude(path=LEFT_OUT)
    .exclude(method="PUT", path="/v1/services/{name}")
)


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("HOMERUN_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_gets_a_server_error(case: Any, admin: Admin) -> None:
    response = case.call(base_url=admin.url, headers=admin.headers, timeout=30)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )


def test_the_description_is_served(admin: Admin) -> None:
    served = httpx.get(f"{admin.url}/v1/openapi.json", headers=admin.headers, trust_env=False)
    assert served.json() == openapi_document()


def test_the_daemon_still_serves_after_the_fuzzing(admin: Admin) -> None:
    status = httpx.get(f"{admin.url}/v1/status", headers=admin.headers, trust_env=False)
    assert status.status_code == 200
    listed = admin.platform.run("services", "list", check=True).stdout
    assert "fuzzed" in listed
    admin.platform.run("revisions", "list", check=True)
    assert admin.platform.request("fuzzed", "GET", "/").status_code == 200
