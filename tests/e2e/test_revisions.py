"""Revisions and the service commands: redeploys move traffic, deletes remove, lists tell."""

from __future__ import annotations

import re

import pytest

from .harness import APPS, Platform, host_pid, instance_processes, namespace_pid, wait_until_dead

pytestmark = pytest.mark.e2e

STREAMING = APPS / "streaming"


def test_redeploy_creates_a_new_revision_and_moves_traffic(platform: Platform) -> None:
    platform.deploy_ok("redeploy", STREAMING, "--set-env-vars", "GREETING=one")
    first = platform.env_of("redeploy")
    assert re.fullmatch(r"redeploy-00001-[a-z0-9]+", first["K_REVISION"])
    assert first["GREETING"] == "one"
    first_host_pid = host_pid(first["pid"], "redeploy")  # the app's own is its sandbox's

    platform.deploy_ok("redeploy", STREAMING, "--set-env-vars", "GREETING=two")
    second = platform.env_of("redeploy")
    assert re.fullmatch(r"redeploy-00002-[a-z0-9]+", second["K_REVISION"])
    assert second["GREETING"] == "two"
    # Another process (by the host's pids: in sandboxes, both may be pid 3 of their own).
    revision = {second["K_REVISION"]}
    second_host_pids = [
        pid for pid in instance_processes(revisions=revision) if namespace_pid(pid) == second["pid"]
    ]
    assert second_host_pids and first_host_pid not in second_host_pids
    # The old revision's instance drains and stops (stop grace is 3 s on this platform).
    assert wait_until_dead(first_host_pid, timeout=15), "the old revision's instance still runs"

    revisions = platform.run("revisions", "list", "--service", "redeploy", check=True).stdout
    assert first["K_REVISION"] in revisions and second["K_REVISION"] in revisions


def test_services_list_describe_and_delete(platform: Platform) -> None:
    platform.deploy_ok("throwaway", STREAMING)
    instance = platform.env_of("throwaway")
    instance_pid = host_pid(instance["pid"], "throwaway")

    listed = platform.run("services", "list", check=True).stdout
    assert "throwaway" in listed
    assert platform.url("throwaway") in listed
    described = platform.run("services", "describe", "throwaway", check=True).stdout
    assert platform.url("throwaway") in described
    assert instance["K_REVISION"] in described
    revisions = platform.run("revisions", "list", check=True).stdout
    assert instance["K_REVISION"] in revisions

    platform.run("services", "delete", "throwaway", check=True)
    assert "throwaway" not in platform.run("services", "list", check=True).stdout
    assert platform.run("services", "describe", "throwaway").returncode != 0
    assert platform.request("throwaway", "GET", "/env").status_code == 404
    assert wait_until_dead(instance_pid, timeout=15), "a deleted service's instance still runs"


def test_describe_unknown_service_fails_clearly(platform: Platform) -> None:
    result = platform.run("services", "describe", "never-deployed")
    assert result.returncode != 0
    assert "never-deployed" in result.stderr
