"""Private instance ports (runtime/netns.py): with the sandbox, each revision's instances listen
in a network namespace of their own, reachable only through the router. Tried as an attacker
would: an app that binds 0.0.0.0:$PORT, a direct connection to it from this machine (loopback
and its other addresses) and from another service's instance; all refused. What must still
work from inside: another service by its URL through the router, the metadata server.

These need root and bubblewrap (as the sandbox's own tests); elsewhere they are skipped."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homerun.runtime.sandbox import probe

from .harness import APPS, Platform, running_platform

pytestmark = pytest.mark.e2e

SNOOP = APPS / "snoop"
# Tests touch loopback and namespaces of homerun's only, never this machine's other addresses:
# a socket bound to 0.0.0.0 in the host's namespace also answers on its 127.0.0.1, so an app
# that does not answer there is in no namespace of the host's, and no address of the host (the
# one another machine connects to included) leads to it. Inside an instance's namespace,
# slirp4netns's gateway (10.0.2.2) is the way to the host.
SLIRP_GATEWAY = "10.0.2.2"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """A daemon with `sandbox: on` serving `locked` (private, its app bound to 0.0.0.0:$PORT),
    `snoop` (forked from its zygote) and `snoop-spawned` (spawned, bound to 0.0.0.0:$PORT)."""
    if os.geteuid() != 0:
        pytest.skip("a network namespace the router connects into needs homerun to run as root")
    sandbox, said = probe("auto", Path("/nonexistent"))
    if sandbox is None:
        pytest.skip(said)
    home = tmp_path_factory.mktemp("private") / "home"
    with running_platform(home, venv_cache, {"sandbox": "on", "stop-grace-seconds": 3}) as own:
        own.deploy_ok(
            "locked",
            SNOOP,
            "--no-allow-unauthenticated",
            "--command",
            "sh,-c,exec gunicorn --bind 0.0.0.0:$PORT main:app",
        )
        own.deploy_ok("snoop", SNOOP)
        own.deploy_ok(
            "snoop-spawned",
            SNOOP,
            "--command",
            "sh,-c,exec python -m flask --app main run --host 0.0.0.0 --port $PORT",
        )
        yield own


def attempt(platform: Platform, service: str, op: str, **fields: Any) -> dict[str, Any]:
    response = platform.request(service, "POST", "/try", json={"op": op, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def ports_of(platform: Platform, service: str) -> list[int]:
    """The $PORT of each of the service's instances (one at least: it was just called)."""
    platform.request(service, "GET", "/", headers=bearer(platform, service))
    instances = platform.describe_service(service)["revisions"][0]["instances"]
    ports = [int(instance["port"]) for instance in instances]
    assert ports, instances
    return ports


def bearer(platform: Platform, service: str) -> dict[str, str]:
    result = platform.run(
        "auth", "print-identity-token", "--audiences", platform.url(service), check=True
    )
    return {"Authorization": f"Bearer {result.stdout.strip().splitlines()[-1]}"}


def connects(host: str, port: int) -> str | None:
    """What a direct connection from this machine gets: None when refused or unreachable."""
    try:
        with socket.create_connection((host, port), timeout=3) as direct:
            direct.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return direct.recv(100).decode(errors="replace") or "connected, then closed"
    except OSError:
        return None


def test_describe_says_the_network_is_private(private: Platform) -> None:
    for service in ("locked", "snoop", "snoop-spawned"):
        reason = private.describe_service(service)["revisions"][0]["start_mode"]["reason"]
        assert "its own network namespace" in reason, reason
    status = private.run("status", check=True).stdout
    assert "its own network namespace" in status, status


def test_a_private_service_answers_through_the_router_only(private: Platform) -> None:
    """Its app binds 0.0.0.0:$PORT; without the sandbox this answered 200 to anyone who asked
    that port directly, token or not."""
    refused = private.request("locked", "GET", "/")
    assert refused.status_code in (401, 403), refused.text
    allowed = private.request("locked", "GET", "/", headers=bearer(private, "locked"))
    assert allowed.status_code == 200 and allowed.text == "hello", allowed.text
    for port in ports_of(private, "locked"):
        for host in ["127.0.0.1", "::1"]:
            assert connects(host, port) is None, f"{host}:{port} answered a direct connection"


@pytest.mark.parametrize("service", ["snoop", "snoop-spawned"])
def test_an_instance_cannot_reach_another_instances_port(private: Platform, service: str) -> None:
    for port in ports_of(private, "locked"):
        for host in ["127.0.0.1", SLIRP_GATEWAY]:
            answer = attempt(private, service, "tcp", host=host, port=port)
            assert not answer["ok"], f"{service} reached locked at {host}:{port}: {answer}"
    # Nor the other sandboxed service's instances, forked or spawned.
    other = "snoop-spawned" if service == "snoop" else "snoop"
    for port in ports_of(private, other):
        answer = attempt(private, service, "tcp", host="127.0.0.1", port=port)
        assert not answer["ok"], f"{service} reached {other} on {port}: {answer}"


@pytest.mark.parametrize("service", ["snoop", "snoop-spawned"])
def test_an_instance_reaches_another_service_by_its_url(private: Platform, service: str) -> None:
    """The service URL (its host in the hosts file, the router's port) goes to the router's
    listener on the revision's own loopback; a private service still wants a token there."""
    other = "snoop-spawned" if service == "snoop" else "snoop"
    answer = attempt(private, service, "fetch", url=f"{private.url(other)}/")
    assert answer["ok"] and answer["result"] == "200 hello", answer
    locked = attempt(private, service, "fetch", url=f"{private.url('locked')}/")
    assert not locked["ok"], locked
    assert "403" in locked["error"] or "401" in locked["error"], locked


@pytest.mark.parametrize("service", ["snoop", "snoop-spawned"])
def test_the_metadata_server_answers_inside_the_instance(private: Platform, service: str) -> None:
    """Its address (GCE_METADATA_HOST) is on the revision's own loopback too, and it still
    tells which instance asks (the service account's e-mail is the instance's own)."""
    env = attempt(private, service, "read", path="/proc/self/environ")
    assert env["ok"], env
    variables = dict(item.split("=", 1) for item in env["result"].split("\0") if "=" in item)
    host = variables["GCE_METADATA_HOST"]
    base = f"http://{host}/computeMetadata/v1"
    flavor = {"Metadata-Flavor": "Google"}
    project = attempt(private, service, "fetch", url=f"{base}/project/project-id", headers=flavor)
    assert project["ok"] and project["result"].startswith("200 "), project
    email = attempt(
        private,
        service,
        "fetch",
        url=f"{base}/instance/service-accounts/default/email",
        headers=flavor,
    )
    assert email["ok"] and "@" in email["result"], email
    token = attempt(
        private,
        service,
        "fetch",
        url=f"{base}/instance/service-accounts/default/identity?audience=https://x",
        headers=flavor,
    )
    assert token["ok"] and token["result"].count(".") == 2, token


# The package index pip uses here (the default one); an instance's way out is checked on it.
PACKAGE_INDEX = "https://pypi.org/simple/pip/"


def reachable_from_here(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize("service", ["snoop", "snoop-spawned"])
def test_an_instance_reaches_the_package_index_but_not_the_hosts_loopback(
    private: Platform, service: str
) -> None:
    """Outbound connections leave through slirp4netns, as pip's in a build do; the host's
    127.0.0.1 (where the router and other programs listen) is not one of them."""
    if shutil.which("slirp4netns") is None:
        pytest.skip("no slirp4netns: instances reach the router and metadata server only")
    reason = private.describe_service(service)["revisions"][0]["start_mode"]["reason"]
    assert "through slirp4netns" in reason, reason
    if not reachable_from_here(PACKAGE_INDEX):
        pytest.skip(f"this machine does not reach {PACKAGE_INDEX}, so nor can an instance")
    answer = attempt(private, service, "fetch", url=PACKAGE_INDEX, headers={})
    assert answer["ok"] and answer["result"].startswith("200 "), answer
    blocked = attempt(private, service, "tcp", host=SLIRP_GATEWAY, port=private.port)
    assert not blocked["ok"], blocked


def ways_out(platform: Platform) -> set[int]:
    """The daemon's slirp4netns processes (one per revision that has a namespace)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() != "slirp4netns":
                    continue
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == platform.pid:
                    found.add(int(entry.name))
    return found


def test_a_deleted_services_namespace_goes_with_it(private: Platform) -> None:
    """Its listeners and its slirp4netns go once its last instance is gone: nothing of it
    survives `services delete`."""
    if shutil.which("slirp4netns") is None:
        pytest.skip("no slirp4netns: the namespace holds no process of the daemon's")
    before = ways_out(private)
    private.deploy_ok("fleeting", SNOOP)
    assert private.request("fleeting", "GET", "/").status_code == 200
    with_it = ways_out(private)
    assert len(with_it - before) == 1, (before, with_it)
    private.run("services", "delete", "fleeting", "--quiet", check=True)
    deadline = time.monotonic() + 30
    while ways_out(private) & (with_it - before):
        assert time.monotonic() < deadline, "the deleted service's slirp4netns still runs"
        time.sleep(0.2)
