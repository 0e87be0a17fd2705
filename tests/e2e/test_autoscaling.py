"""Autoscaling end to end: real load through the router scales real instances out, caps them
at their concurrency, answers 429 at max-instances, drains them and scales them back to zero.

One daemon for the module, with Knative's windows shortened through config.yaml so that a
scale-to-zero takes seconds: a 6 s stable window (Knative's minimum; the panic window is 10 %
of it, 0.6 s), a 2 s grace and a decision every 0.5 s. Every load here is bounded both in
requests and in time, and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import APPS, Platform, get_inside, namespace_pid, running_platform, wait_until_dead

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STABLE_WINDOW = 6.0
GRACE = 2.0
TICK = 0.5
AUTOSCALER_CONFIG = {
    "stop-grace-seconds": 3,
    "autoscaler": {
        "stable-window": f"{STABLE_WINDOW:g}s",
        "scale-to-zero-grace-period": f"{GRACE:g}s",
        "tick-interval": f"{TICK:g}s",
        "max-scale": 100,
    },
}
# Cloud Run's container-concurrency-target-percentage: an instance is meant to carry 60 % of
# its --concurrency, so 30 clients at --concurrency 5 need ceil(30 / 3) = 10 instances.
UTILIZATION = 0.6
# Idle time before the last instance goes, plus ticks for the halving scale-down steps
# (10 -> 5 -> 2 -> 1 -> 0), an instance's SIGTERM and a busy machine. Measured: ~9.5 s.
SCALE_TO_ZERO_SECONDS = STABLE_WINDOW + GRACE + 20 * TICK
POLL_SECONDS = 0.25

FASTAPI_SEED = APPS / "fastapi_seed"
INFLIGHT = APPS / "inflight"


@pytest.fixture(scope="module")
def scaling(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """A daemon with short autoscaler windows, for this module's tests."""
    home = tmp_path_factory.mktemp("autoscaling") / "home"
    with running_platform(home, venv_cache, AUTOSCALER_CONFIG) as platform:
        yield platform


# Helpers ------------------------------------------------------------------------------------


@contextlib.contextmanager
def deployed(platform: Platform, service: str, source: Path, *flags: str) -> Iterator[str]:
    """Deploy for one test and delete the service afterwards, passed or failed, so that its
    instances don't take CPU from the next test. Public, as the seed's services are: these
    tests are about scaling, and the clients send no identity token."""
    platform.deploy_ok(service, source, "--allow-unauthenticated", *flags)
    try:
        yield service
    finally:
        # Neither step may hide the test's own failure (a dead daemon fails both).
        with contextlib.suppress(Exception, pytest.fail.Exception):
            platform.describe_service(service)  # records revision names for the leak check
        with contextlib.suppress(subprocess.TimeoutExpired):
            platform.run("services", "delete", service, timeout=60)


def serving_revision(described: dict[str, Any]) -> dict[str, Any]:
    """The revision that takes the service's traffic (these tests deploy one each)."""
    name = described["latest_ready_revision"]
    return next(revision for revision in described["revisions"] if revision["name"] == name)


def instance_states(revision: dict[str, Any]) -> Counter[str]:
    return Counter(instance["state"] for instance in revision["instances"])


def decisions(revision: dict[str, Any], last: int = 8) -> str:
    """The latest autoscaler decisions, oldest first, for assertion messages."""
    lines = [
        f"  -{decision['seconds_ago']}s: {decision['desired']} ({decision['mode']}) "
        f"{decision['reason']}"
        for decision in reversed(revision.get("scaling", {}).get("decisions", [])[:last])
    ]
    return "\n".join(lines) or "  (none)"


def poll_revision(
    platform: Platform,
    service: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """Describe the serving revision until `until(revision)` holds; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        revision = serving_revision(platform.describe_service(service))
        if until(revision):
            return revision
        if time.monotonic() > deadline:
            pytest.fail(
                f"{service}: {what} not seen within {timeout:g}s; instances "
                f"{dict(instance_states(revision))}, in flight {revision['in_flight']}, queue "
                f"{revision['queue_length']}; decisions:\n{decisions(revision)}"
            )
        time.sleep(POLL_SECONDS)


class ClosedLoopLoad:
    """`clients` threads, each sending GET `path` again and again over its own keep-alive
    connection, until `seconds` pass, `max_requests` have been sent in all, or `stop()`.

    Used as a context manager: leaving the block (also by a failed assertion) stops the
    clients and waits for their last requests.
    """

    def __init__(
        self,
        platform: Platform,
        service: str,
        path: str,
        *,
        clients: int,
        seconds: float,
        max_requests: int,
    ) -> None:
        self._platform = platform
        self._service = service
        self._path = path
        self._seconds = seconds
        self._budget = threading.Semaphore(max_requests)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self._deadline = 0.0
        # Results, written by the client threads under the lock.
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.latencies: list[float] = []

    def __enter__(self) -> ClosedLoopLoad:
        self._deadline = time.monotonic() + self._seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.join()

    def stop(self) -> None:
        self._stopped.set()

    def join(self) -> None:
        """Wait for the clients to end (at the deadline, or sooner once stopped)."""
        # A request in flight at the deadline may still wait for a slot or a cold start.
        limit = max(time.monotonic(), self._deadline) + 60
        for thread in self._threads:
            thread.join(timeout=max(0.0, limit - time.monotonic()))
        alive = sum(thread.is_alive() for thread in self._threads)
        assert not alive, f"{alive} load client(s) still running 60 s after the load ended"

    @property
    def running(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._deadline

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.failures)

    def _client(self) -> None:
        with self._platform.client(self._service, timeout=60) as client:
            while self.running and self._budget.acquire(blocking=False):
                started = time.monotonic()
                try:
                    response = client.get(self._path)
                except httpx.HTTPError as error:
                    with self._lock:
                        self.failures.append(f"{type(error).__name__}: {error}")
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.latencies.append(time.monotonic() - started)
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")


def get_in_background(
    pool: ThreadPoolExecutor, platform: Platform, service: str, path: str, **params: Any
) -> Any:
    """A request on its own connection, sent from `pool`; the future gives the response."""
    return pool.submit(platform.request, service, "GET", path, params=params, timeout=60)


# 1. Scale out under load, back to zero, and up again ----------------------------------------


def test_seed_scales_out_under_load_then_to_zero_then_serves_from_zero(scaling: Platform) -> None:
    clients, concurrency = 30, 5
    needed = math.ceil(clients / (concurrency * UTILIZATION))  # 10
    with deployed(scaling, "as-seed", FASTAPI_SEED, "--concurrency", str(concurrency)) as service:
        most_ready, most_in_flight, revision = 0, 0, {}
        instance_pids: set[int] = set()
        # /produtos sleeps 1 s in a thread: about 30 requests a second at best, 10 s of load.
        with ClosedLoopLoad(
            scaling, service, "/produtos", clients=clients, seconds=10, max_requests=400
        ) as load:
            while load.running:
                revision = serving_revision(scaling.describe_service(service))
                most_ready = max(most_ready, instance_states(revision)["ready"])
                for instance in revision["instances"]:
                    most_in_flight = max(most_in_flight, instance["in_flight"])
                    instance_pids.add(instance["pid"])
                time.sleep(POLL_SECONDS)
        load_ended = time.monotonic()
        assert load.failures == [], load.failures[:5]
        assert load.requests >= 150, f"only {load.requests} requests in 10 s: {load.statuses}"
        assert most_ready >= needed, (
            f"at most {most_ready} ready instances under {clients} clients, expected {needed}:\n"
            + decisions(revision)
        )
        assert 0 < most_in_flight <= concurrency

        # No traffic: after the stable window plus the grace, every instance goes.
        idle = poll_revision(
            scaling,
            service,
            lambda revision: not revision["instances"],
            timeout=SCALE_TO_ZERO_SECONDS,
            what="scale to zero",
        )
        took = time.monotonic() - load_ended
        # The last request ended just before `load_ended`: zero only after window + grace.
        assert took >= STABLE_WINDOW + GRACE - 1, f"scaled to zero {took:.1f}s after the load"
        assert idle["scaling"]["decisions"][0]["desired"] == 0, decisions(idle)
        # Gone, not just unlisted. (Only the pids seen here: other sessions on this machine may
        # run services of the same name.)
        still_running = [pid for pid in instance_pids if not wait_until_dead(pid, timeout=10)]
        assert still_running == [], "instances still running after scaling to zero"

        # A request from zero waits for a cold start and is served.
        response = scaling.request(service, "GET", "/produtos", timeout=60)
        assert response.status_code == 200, response.text
        assert response.json() == {"produtos": ["Produto 1", "Produto 2"]}


# 2. The router never gives an instance more than its concurrency ----------------------------


def test_no_instance_ever_holds_more_than_its_concurrency(scaling: Platform) -> None:
    concurrency = 3
    with deployed(scaling, "as-inflight", INFLIGHT, "--concurrency", str(concurrency)) as service:
        # 0.3 s per request: about 65 a second from 20 clients, 5 s of load.
        with ClosedLoopLoad(
            scaling, service, "/work?seconds=0.3", clients=20, seconds=5, max_requests=600
        ) as load:
            load.join()
        assert load.failures == [], load.failures[:5]
        assert load.statuses[200] >= 100, load.statuses

        # Ask every instance itself, on its own port (inside its network), what it held at most.
        revision = serving_revision(scaling.describe_service(service))
        reports = [
            report
            for instance in revision["instances"]
            if (report := own_stats(instance)) is not None
        ]
        assert len(reports) >= 2, f"expected several instances under 20 clients: {reports}"
        assert sum(report["served"] for report in reports) > 0
        assert all(report["max_in_flight"] <= concurrency for report in reports), reports
        # The cap was reached somewhere, so a router that ignored it could have been caught.
        assert max(report["max_in_flight"] for report in reports) > 1, reports


def own_stats(instance: dict[str, Any]) -> dict[str, Any] | None:
    """What an instance says it held, asked on its own port; None if it stopped meanwhile (the
    load is over, and the scaler may be retiring instances as describe lists them)."""
    own_pid = namespace_pid(instance["pid"])
    if own_pid is None:
        return None
    try:
        report = get_inside(instance["pid"], instance["port"], "/stats")
    except AssertionError:
        if namespace_pid(instance["pid"]) is None:
            return None
        raise
    # The app sees its pid in its sandbox's PID namespace, describe the host's.
    assert report["pid"] == own_pid, (report, instance)
    return report


# 3. --min-instances keeps an instance warm through an idle period ---------------------------


def test_min_instances_keeps_one_instance_through_idle_periods(scaling: Platform) -> None:
    with (
        deployed(scaling, "as-cold", INFLIGHT) as cold,
        deployed(scaling, "as-warm", INFLIGHT, "--min-instances", "1") as warm,
    ):
        warm_deployed = time.monotonic()
        first = serving_revision(scaling.describe_service(warm))
        assert instance_states(first)["ready"] == 1, first["instances"]
        warm_pid = first["instances"][0]["pid"]

        # Idle longer than window + grace: the cold service, deployed just before, goes to zero
        # in that time (so the period was long enough) and the warm one keeps its instance.
        cold_went_to_zero = False
        watched_until = warm_deployed + STABLE_WINDOW + GRACE + 4 * TICK
        while time.monotonic() < watched_until or not cold_went_to_zero:
            assert time.monotonic() < warm_deployed + SCALE_TO_ZERO_SECONDS, (
                f"{cold} did not scale to zero"
            )
            warm_revision = serving_revision(scaling.describe_service(warm))
            pids = [instance["pid"] for instance in warm_revision["instances"]]
            assert pids == [warm_pid], (
                f"{warm} should keep its one instance (pid {warm_pid}), has {pids}:\n"
                + decisions(warm_revision)
            )
            cold_went_to_zero |= not serving_revision(scaling.describe_service(cold))["instances"]
            time.sleep(POLL_SECONDS)
        assert warm_revision["scaling"]["min_instances"] == 1
        assert warm_revision["scaling"]["decisions"][0]["desired"] == 1, decisions(warm_revision)
        response = scaling.request(warm, "GET", "/work?seconds=0")
        assert response.status_code == 200
        assert response.json()["pid"] == namespace_pid(warm_pid)


# 4. At max-instances with every slot taken, a request waits ~10 s and gets 429 --------------


def test_full_max_instances_answers_429_after_the_overload_wait(scaling: Platform) -> None:
    flags = ("--max-instances", "1", "--concurrency", "1")
    with deployed(scaling, "as-full", INFLIGHT, *flags) as service, ThreadPoolExecutor(2) as pool:
        # Held longer than any overload wait: max(10 s, 3.5 x the average startup), which
        # passes 12 s when a loaded machine starts the instance in over 3.4 s.
        occupying = get_in_background(pool, scaling, service, "/work", seconds=40)
        poll_revision(
            scaling, service, lambda r: r["in_flight"] == 1, timeout=10, what="the first request"
        )
        sent = time.monotonic()
        waiting = get_in_background(pool, scaling, service, "/work", seconds=0)
        saw_queued = False
        while not waiting.done() and time.monotonic() < sent + 35:
            revision = serving_revision(scaling.describe_service(service))
            assert len(revision["instances"]) <= 1, revision["instances"]
            saw_queued |= revision["queue_length"] == 1
            time.sleep(POLL_SECONDS)
        rejected = waiting.result(timeout=5)
        waited = time.monotonic() - sent
        assert rejected.status_code == 429, rejected.text
        assert len(rejected.content) < 1024, rejected.text
        assert saw_queued, "describe never showed the waiting request in the queue"
        # The platform logs the wait it applied; the 429 came after it, checked every 0.5 s.
        logged = scaling.run("logs", "read", service, "--limit", "50", check=True).stdout
        applied = re.search(r"waited (\d+\.\d)s for a free instance at max-instances", logged)
        assert applied, logged
        wait = float(applied.group(1))
        assert wait >= 10.0, logged
        assert wait - 0.5 <= waited <= wait + 2.5, f"429 after {waited:.1f}s, logged {wait}s"

        held = occupying.result(timeout=40)
        assert held.status_code == 200, held.text
        revision = serving_revision(scaling.describe_service(service))
        assert revision["scaling"]["overloaded_requests"] == 1, revision["scaling"]


# 5. Scaling down drains: requests in flight on a stopping instance complete -----------------


LONG_REQUESTS = 6


def test_scale_down_drains_instances_with_requests_in_flight(scaling: Platform) -> None:
    # A short burst scales the revision out to 4 or more instances, and puts it in panic mode,
    # which holds the instances for a stable window (6 s) after the last panic reading. Once
    # the burst's requests are over, six long requests go to idle instances: round robin
    # (concurrency above 3) gives consecutive picks to different instances, so several hold
    # one. Once the burst has left the stable window the autoscaler wants ceil(6 / 6) = 1
    # instance and keeps the busiest, so every other instance holding a long request is scaled
    # down under it. (Long requests sent during the burst could all land on the one instance
    # with room left, while the burst filled the others: the one kept.)
    with (
        deployed(scaling, "as-drain", INFLIGHT, "--concurrency", "10") as service,
        ThreadPoolExecutor(LONG_REQUESTS) as pool,
    ):
        with ClosedLoopLoad(
            scaling, service, "/work?seconds=1", clients=30, seconds=4, max_requests=200
        ) as burst:
            poll_revision(
                scaling,
                service,
                lambda revision: instance_states(revision)["ready"] >= 4,
                timeout=4,
                what="4 ready instances under the burst",
            )
        assert burst.failures == [], burst.failures[:5]
        long_requests = [
            get_in_background(pool, scaling, service, "/work", seconds=12)
            for _ in range(LONG_REQUESTS)
        ]
        revision = poll_revision(
            scaling,
            service,
            lambda revision: revision["in_flight"] == LONG_REQUESTS,
            timeout=5,
            what=f"{LONG_REQUESTS} long requests in flight",
        )
        holding = [instance for instance in revision["instances"] if instance["in_flight"]]
        assert len(holding) >= 2, f"the long requests were not spread: {revision['instances']}"

        # Watch until the long requests end: which instances drained while still serving?
        drained_while_serving: set[int] = set()  # instance ports
        deadline = time.monotonic() + 20
        while not all(future.done() for future in long_requests):
            assert time.monotonic() < deadline, "the long requests did not finish"
            revision = serving_revision(scaling.describe_service(service))
            drained_while_serving |= {
                instance["port"]
                for instance in revision["instances"]
                if instance["state"] == "draining" and instance["in_flight"] > 0
            }
            time.sleep(POLL_SECONDS)
        responses = [future.result() for future in long_requests]
        assert [response.status_code for response in responses] == [200] * LONG_REQUESTS, [
            response.text for response in responses
        ]
        served_by = {response.json()["port"] for response in responses}
        assert served_by & drained_while_serving, (
            f"no long request was on an instance being scaled down (served by {served_by}, "
            f"drained while serving {drained_while_serving}); decisions:\n{decisions(revision)}"
        )


# 6. A cold start is counted and timed --------------------------------------------------------


def test_cold_start_wait_is_recorded(scaling: Platform) -> None:
    with deployed(scaling, "as-coldstart", INFLIGHT) as service:
        idle = poll_revision(
            scaling,
            service,
            lambda revision: not revision["instances"],
            timeout=SCALE_TO_ZERO_SECONDS + 5,
            what="scale to zero after the deploy",
        )
        before = idle["scaling"]["waited_requests"]
        sent = time.monotonic()
        response = scaling.request(service, "GET", "/work?seconds=0")
        took_ms = (time.monotonic() - sent) * 1000
        assert response.status_code == 200, response.text

        scaling_info = serving_revision(scaling.describe_service(service))["scaling"]
        assert scaling_info["waited_requests"] == before + 1, scaling_info
        assert scaling_info["median_wait_ms"] is not None, scaling_info
        # The one wait recorded is this request's: more than nothing, less than it took.
        assert 0 < scaling_info["median_wait_ms"] <= took_ms, (scaling_info, took_ms)
