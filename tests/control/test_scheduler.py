"""Scheduler jobs over the real store and token authority, with the wall clock faked and the
HTTP call recorded: which runs are made, skipped, paused; the ID token each call carries;
what a failed call leaves. (tests/e2e/test_scheduler.py calls a real private service.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes import Clock

from homerun.access.tokens import TokenAuthority
from homerun.control.scheduler import Scheduler
from homerun.control.tasks import Tasks
from homerun.errors import InvalidSpec, NotFound
from homerun.model.scheduler import HttpTarget, SchedulerJobRequest, check_target
from homerun.observe.logs import LogStore
from homerun.scheduler_store import SchedulerStore

# 2026-12-04T10:00:30Z, a Friday
NOW = 1_796_378_430.0
DOMAIN = "localhost"
URI = "http://report.localhost:8080/run?full=1"
EMAIL = "sched@my-project.iam.gserviceaccount.com"


class RecordingCall:
    """The call of a target: recorded; answers `status`, or raises `failure`."""

    def __init__(self) -> None:
        self.calls: list[tuple[HttpTarget, dict[str, str]]] = []
        self.status = 200
        self.failure: httpx.HTTPError | None = None

    async def __call__(self, target: HttpTarget, headers: dict[str, str]) -> tuple[int, str]:
        self.calls.append((target, headers))
        if self.failure is not None:
            raise self.failure
        return self.status, "no such table: reports" if self.status >= 400 else "ok"


class Fixture:
    def __init__(self, home: Path) -> None:
        self.clock = Clock(NOW)
        self.call = RecordingCall()
        self.authority = TokenAuthority(b"k" * 32, "http://localhost:8080", clock=self.clock)
        self.logs = LogStore(home / "logs")
        self.tasks = Tasks()
        self.store_path = home / "homerun.db"
        self.store = SchedulerStore(self.store_path)
        self.scheduler = self.make()

    def make(self) -> Scheduler:
        """A scheduler over the same database: a daemon (re)started."""
        return Scheduler(
            store=SchedulerStore(self.store_path),
            logs=self.logs,
            authority=self.authority,
            tasks=self.tasks,
            domain=DOMAIN,
            call=self.call,
            wall_clock=self.clock,
        )


@pytest.fixture
def fixture(tmp_path: Path) -> Iterator[Fixture]:
    made = Fixture(tmp_path)
    yield made
    made.store.close()


def request(**target: object) -> SchedulerJobRequest:
    return SchedulerJobRequest(
        name="every-5",
        schedule="*/5 * * * *",
        target=HttpTarget(uri=URI, **target),  # type: ignore[arg-type]
    )


async def settle(tasks: Tasks) -> None:
    """Let the calls the scheduler spawned finish (no real time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


def test_a_run_is_made_at_its_time_with_an_id_token_for_the_service_url(
    fixture: Fixture,
) -> None:
    async def scenario() -> None:
        scheduler = fixture.scheduler
        job = scheduler.create(request(oidc_service_account_email=EMAIL, body="{}"))
        assert job.state == "ENABLED" and job.next_run == NOW + 270  # 10:05:00
        record = fixture.store.job("every-5")
        assert scheduler.check(record, NOW + 100) == NOW + 270  # not yet: nothing called
        assert fixture.call.calls == []
        assert scheduler.check(record, NOW + 275) == NOW + 570  # 10:05:05: the 10:05 run
        await settle(fixture.tasks)
        [(target, headers)] = fixture.call.calls
        assert target.http_method == "POST" and target.uri == URI
        assert headers["Content-Type"] == "application/octet-stream"
        scheme, token = headers["Authorization"].split(" ")
        claims = fixture.authority.verify(token.encode())
        assert scheme == "Bearer" and claims.audience == "http://report.localhost:8080"
        assert claims.member == f"serviceAccount:{EMAIL}"
        [attempt] = scheduler.describe("every-5").attempts
        assert attempt.status_code == 200 and attempt.scheduled_for == NOW + 270

    asyncio.run(scenario())


def test_runs_missed_while_down_or_paused_are_skipped_not_made_up(fixture: Fixture) -> None:
    async def scenario() -> None:
        scheduler = fixture.scheduler
        scheduler.create(request())
        # Down from 10:00:30 to 10:21:30: 10:05, 10:10, 10:15 and 10:20 passed, the last 90 s
        # ago (past the minute's grace): all four are skipped.
        restarted = fixture.make()
        now = fixture.clock.advance(1260)
        assert restarted.check(fixture.store.job("every-5"), now) == NOW + 1470  # 10:25
        await settle(fixture.tasks)
        assert fixture.call.calls == []
        assert fixture.store.job("every-5").scheduled_at == now
        paused = restarted.pause("every-5")
        assert paused.state == "PAUSED" and paused.next_run is None
        now = fixture.clock.advance(3600)  # paused until 11:21:30: twelve runs named meanwhile
        resumed = restarted.resume("every-5")
        assert resumed.state == "ENABLED" and resumed.next_run == NOW + 5070  # 11:25
        assert restarted.check(fixture.store.job("every-5"), now) == NOW + 5070
        await settle(fixture.tasks)
        assert fixture.call.calls == []  # none of the paused hour's runs is made up

    asyncio.run(scenario())


def test_a_failed_call_is_recorded_with_its_status_and_not_retried(fixture: Fixture) -> None:
    async def scenario() -> None:
        scheduler = fixture.scheduler
        scheduler.create(request(http_method="get"))
        fixture.call.status = 500
        attempt = await scheduler.run("every-5")
        assert attempt.status_code == 500 and not attempt.succeeded
        assert attempt.error == "HTTP 500: no such table: reports"
        assert attempt.scheduled_for is None  # run now
        fixture.call.failure = httpx.ConnectError("connection refused")
        refused = await scheduler.run("every-5")
        assert refused.status_code is None and refused.error == "no answer: connection refused"
        assert len(fixture.call.calls) == 2  # each once
        assert fixture.call.calls[0][0].http_method == "GET"
        assert "Authorization" not in fixture.call.calls[0][1]  # no account: no token
        described = scheduler.describe("every-5")
        assert [a.error for a in described.attempts] == [refused.error, attempt.error]

    asyncio.run(scenario())


def test_bad_jobs_are_refused_saying_what_to_do(fixture: Fixture) -> None:
    scheduler = fixture.scheduler
    for target, message in (
        ({"uri": "http://example.com/run"}, "example.com is not on this machine"),
        ({"uri": "http://10.0.0.8:8080/"}, "10.0.0.8 is not on this machine"),
        ({"uri": "ftp://127.0.0.1/x"}, "is not an http(s) URL"),
        ({"uri": URI, "http_method": "FETCH"}, "--http-method: 'FETCH' is not one of"),
        ({"uri": URI, "headers": {"Host": "x"}}, "--headers: Host is set by the scheduler"),
        ({"uri": URI, "oidc_service_account_email": "sched"}, "is not a service account's"),
    ):
        bad = SchedulerJobRequest(name="bad", schedule="* * * * *", target=HttpTarget(**target))
        with pytest.raises(InvalidSpec, match=re.escape(message)):
            scheduler.create(bad)
    with pytest.raises(InvalidSpec, match="hour '25' is not between 0 and 23"):
        scheduler.create(request().model_copy(update={"schedule": "0 25 * * *"}))
    scheduler.create(request())
    with pytest.raises(InvalidSpec, match="already exists"):
        scheduler.create(request())
    with pytest.raises(NotFound, match="scheduler job 'every-6' not found; did you mean"):
        scheduler.describe("every-6")
    assert [job.name for job in scheduler.jobs()] == ["every-5"]


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("http://127.0.0.1:9000/hook", True),
        ("http://[::1]:9000/hook", True),
        ("http://localhost:8080/", True),
        ("http://report.localhost:8080/run", True),
        ("http://beta---report.localhost:8080/", True),
        ("http://report.localhost.evil.com/", False),
        ("http://169.254.169.254/", False),
        ("https://example.com/", False),
        ("https://report.localhost:8443/", False),  # its http:// URL: the router on loopback
        ("https://127.0.0.1:8443/", True),
    ],
)
def test_only_loopback_and_service_urls_are_called(uri: str, allowed: bool) -> None:
    try:
        check_target(HttpTarget(uri=uri), DOMAIN)
    except InvalidSpec:
        assert not allowed
    else:
        assert allowed


def test_the_loop_makes_enabled_jobs_runs_and_skips_paused_ones(fixture: Fixture) -> None:
    async def scenario() -> None:
        scheduler = fixture.scheduler
        scheduler.create(request())
        scheduler.create(request().model_copy(update={"name": "paused"}))
        scheduler.pause("paused")
        scheduler.start()
        await settle(fixture.tasks)
        assert fixture.call.calls == []  # 10:00:30: no run is due
        fixture.clock.advance(275)  # 10:05:05
        # A change wakes the loop (as its minute's look at the wall clock would).
        scheduler.create(request().model_copy(update={"name": "later", "schedule": "0 9 * * *"}))
        await settle(fixture.tasks)
        assert len(fixture.call.calls) == 1  # every-5's 10:05 run; not the paused job's
        assert [a.scheduled_for for a in scheduler.describe("every-5").attempts] == [NOW + 270]
        assert scheduler.describe("paused").attempts == []
        await fixture.tasks.close()

    asyncio.run(scenario())
