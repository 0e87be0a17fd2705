"""Slow clients and dying instances against a real daemon: bodies trickled at a byte a second
take no slot of a concurrency-1 service, the Host's port must be the router's, and requests an
instance held when it was killed get a 502 that says it exited."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import resource
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from .harness import APPS, Platform, host_pid

pytestmark = pytest.mark.e2e

WHOAMI = APPS / "whoami"


def revision_of(platform: Platform, service: str) -> dict[str, object]:
    revision: dict[str, object] = platform.describe_service(service)["revisions"][0]
    return revision


def test_trickling_bodies_take_no_slot_of_a_concurrency_1_service(platform: Platform) -> None:
    platform.deploy_ok("trickled", WHOAMI, "--concurrency", "1", "--max-instances", "5")
    assert platform.request("trickled", "GET", "/").status_code == 200  # an instance is up
    host = platform.host("trickled").encode()

    async def scenario() -> list[float]:
        tricklers = []
        for _ in range(30):
            _, writer = await asyncio.open_connection("127.0.0.1", platform.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\nx" % host)
            tricklers.append(writer)
        latencies = []
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{platform.port}",
            headers={"Host": host.decode()},
            timeout=10,
            trust_env=False,
        ) as client:
            for _ in range(3):  # three seconds of a byte a second from each, bounded
                for writer in tricklers:
                    writer.write(b"x")
                started = time.monotonic()
                response = await client.get("/")
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200, response.text
                await asyncio.sleep(1.0)
        for writer in tricklers:
            writer.close()
        return latencies

    latencies = asyncio.run(asyncio.wait_for(scenario(), 60))
    # Before: each real request queued behind the tricklers' slots, then 429 after 10 s.
    assert max(latencies) < 1.0, latencies
    revision = revision_of(platform, "trickled")
    assert revision["queue_length"] == 0
    instances = revision["instances"]
    assert isinstance(instances, list) and len(instances) == 1, instances  # no scale-up


def test_the_host_port_must_be_the_routers(platform: Platform) -> None:
    platform.ensure_deployed("whoami-ports", WHOAMI)
    other_port = 1 if platform.port != 1 else 2

    def status(host: str, target: str = "/") -> int:
        with socket.create_connection(("127.0.0.1", platform.port), 10) as connection:
            connection.sendall(
                f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            head = connection.recv(4096)
        return int(head.split(b" ", 2)[1])

    assert status(f"whoami-ports.localhost:{platform.port}") == 200
    assert status("whoami-ports.localhost") == 200
    assert status(f"whoami-ports.localhost:{other_port}") == 404
    assert status("whoami-ports.localhost:99999") == 400
    assert status("x", f"http://whoami-ports.localhost:{platform.port}/") == 200
    assert status("x", "http://whoami-ports.localhost:99999/") == 400


def test_requests_held_by_a_killed_instance_say_it_exited(platform: Platform) -> None:
    platform.deploy_ok("doomed", WHOAMI, "--concurrency", "10")
    pid = platform.request("doomed", "GET", "/").json()["pid"]  # and a pooled connection
    pgid = os.getpgid(host_pid(pid, "doomed"))  # the host's: the app sees its sandbox's

    def slow() -> httpx.Response:
        return platform.request("doomed", "GET", "/slow", params={"seconds": 20})

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(slow) for _ in range(3)]
        deadline = time.monotonic() + 30
        while revision_of(platform, "doomed")["in_flight"] != 3:
            assert time.monotonic() < deadline, "three requests never got in flight"
            time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
        responses = [future.result(timeout=30) for future in in_flight]
    for response in responses:
        assert response.status_code == 502, response.text
        assert "the instance exited while handling the request" in response.text


def test_the_daemon_raises_its_open_files_limit(own_platform: Platform) -> None:
    # Each client connection is a descriptor: a daemon started from a session whose soft limit
    # is Debian's 1,024 would refuse connections long before the hard limit.
    platform = own_platform
    assert platform.down().returncode == 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        platform.start()  # `homerun up` inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert platform.process is not None
    limits = Path(f"/proc/{platform.process.pid}/limits").read_text()
    row = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert row.split()[3:5] == [str(hard), str(hard)], row
