"""Cloud Scheduler's HTTP jobs (`homerun scheduler jobs create http|list|describe|delete|pause|
resume|run`): a URL of this machine called on a cron schedule, with an ID token when the job
names a service account.

The schedule follows the rules of job schedules (control/schedules.py, whose pure `due` this
reuses): a run is made within a minute of its time; runs whose time passed while homerun was
down, the machine slept or the job was paused are skipped, not made up, and the log says how
many. A call is one attempt, as with Cloud Scheduler's default retry config (retry count 0):
a non-2xx answer or no answer at all is recorded (describe shows it) and logged as an error;
the next scheduled run calls again. `Calls` makes the HTTP call; the scheduler decides when."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx

from homerun.access.tokens import TokenAuthority
from homerun.control.schedules import GRACE_SECONDS, LOOK_SECONDS, due
from homerun.control.tasks import Tasks
from homerun.errors import HomerunError, InvalidSpec
from homerun.model.cron import next_time, parse_cron, time_zone
from homerun.model.scheduler import (
    CallAttempt,
    HttpTarget,
    SchedulerJobRequest,
    SchedulerJobView,
    check_target,
    is_service_host,
    validate_scheduler_job_name,
)
from homerun.observe.logs import LogStore, iso_time, platform_entry
from homerun.scheduler_store import SchedulerJobRecord, SchedulerStore

# Cloud Scheduler's attempt deadline for HTTP targets: 3 minutes by default.
ATTEMPT_DEADLINE_SECONDS = 180.0
LOG = "homerun"  # the platform's own log
BODY_SHOWN = 200  # characters of a failed call's answer kept in its error


class Call(Protocol):
    def __call__(
        self, target: HttpTarget, headers: dict[str, str]
    ) -> Awaitable[tuple[int, str]]: ...


class Calls:
    """HTTP calls of targets: a service's URL goes to the router (its host in the Host
    header), a loopback URL as it is. The answer's status code and the start of its body."""

    def __init__(self, domain: str, router: tuple[str, int]) -> None:
        self._domain = domain
        self._router = router  # (host, port) the router listens on

    async def __call__(self, target: HttpTarget, headers: dict[str, str]) -> tuple[int, str]:
        parts = urlsplit(target.uri)
        url = target.uri
        headers = dict(headers)
        if parts.hostname and is_service_host(parts.hostname, self._domain):
            host, port = self._router
            headers["Host"] = parts.netloc
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            url = urlunsplit(("http", netloc, parts.path or "/", parts.query, ""))
        async with httpx.AsyncClient(timeout=ATTEMPT_DEADLINE_SECONDS, trust_env=False) as client:
            response = await client.request(
                target.http_method,
                url,
                headers=headers,
                content=target.body.encode() if target.body is not None else None,
            )
        return response.status_code, response.text[:BODY_SHOWN]


class Scheduler:
    def __init__(
        self,
        *,
        store: SchedulerStore,
        logs: LogStore,
        authority: TokenAuthority,
        tasks: Tasks,
        domain: str,
        call: Call,
        wall_clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._logs = logs
        self._authority = authority  # mints the calls' ID tokens
        self._tasks = tasks
        self._domain = domain  # SERVICE.DOMAIN hosts are this homerun's services
        self._call = call
        self._wall_clock = wall_clock
        self._changed = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    # -- what the admin API asks --------------------------------------------------------

    def create(self, request: SchedulerJobRequest) -> SchedulerJobView:
        name = validate_scheduler_job_name(request.name)
        schedule = " ".join(request.schedule.split())
        parse_cron(schedule, "--schedule")
        time_zone(request.time_zone)
        target = check_target(request.target, self._domain)
        if target.oidc_service_account_email is not None:
            self._check_email(target.oidc_service_account_email)
        self._store.create(
            name, schedule, request.time_zone, target, request.description, self._wall_clock()
        )
        self._changed.set()
        self._log(f"Scheduler job {name} created: {target.http_method} {target.uri} on {schedule}")
        return self.describe(name)

    def jobs(self) -> list[SchedulerJobView]:
        return [self._view(job) for job in self._store.jobs()]

    def describe(self, name: str) -> SchedulerJobView:
        return self._view(self._store.job(name))

    def delete(self, name: str) -> None:
        self._store.delete(name)
        self._changed.set()
        self._log(f"Scheduler job {name} deleted")

    def pause(self, name: str) -> SchedulerJobView:
        job = self._store.job(name)
        self._store.set_state(name, "PAUSED", job.scheduled_at)
        self._log(f"Scheduler job {name} paused: its runs are skipped until it is resumed")
        return self.describe(name)

    def resume(self, name: str) -> SchedulerJobView:
        self._store.job(name)
        # Runs named while it was paused are not made up (Cloud Scheduler's rule).
        self._store.set_state(name, "ENABLED", self._wall_clock())
        self._changed.set()
        self._log(f"Scheduler job {name} resumed")
        return self.describe(name)

    async def run(self, name: str) -> CallAttempt:
        """Call the job's target now, whatever its schedule and state (`jobs run`)."""
        return await self._attempt(self._store.job(name), None)

    # -- the schedule ---------------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = self._tasks.spawn(self._run())

    def close_store(self) -> None:
        """After the tasks have stopped (the schedule's loop is one)."""
        self._store.close()

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            now = self._wall_clock()
            wake = now + LOOK_SECONDS
            for job in self._store.jobs():
                if job.state == "ENABLED":
                    wake = min(wake, self.check(job, now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, wake - now))

    def check(self, job: SchedulerJobRecord, now: float) -> float:
        """Make the run that is due at `now` (in a task of its own), skip the missed ones;
        the time of the next run."""
        try:
            step = due(
                parse_cron(job.schedule), time_zone(job.time_zone), job.scheduled_at, now,
                GRACE_SECONDS,
            )  # fmt: skip
        except HomerunError as error:  # stored before a check changed: say so, once a minute
            self._log(f"Scheduler job {job.name} not followed: {error}", "ERROR")
            return now + LOOK_SECONDS
        if step.missed:
            self._log(
                f"Scheduler job {job.name}: skipped {step.missed} run(s) whose time passed "
                "while homerun was not running; missed runs are not made up. Next run: "
                f"{iso_time(step.next_at)}",
                "WARNING",
            )
        if step.run_at is not None:
            self._tasks.spawn(self._attempt(job, step.run_at))
        if step.missed or step.run_at is not None:
            self._store.mark_scheduled(job.name, now)
        return step.next_at

    async def _attempt(self, job: SchedulerJobRecord, scheduled_for: float | None) -> CallAttempt:
        target = job.target
        headers = dict(target.headers)
        if target.body is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/octet-stream"  # Cloud Scheduler's default
        headers["User-Agent"] = "Google-Cloud-Scheduler"
        if target.oidc_service_account_email is not None:
            member = f"serviceAccount:{target.oidc_service_account_email}"
            headers["Authorization"] = f"Bearer {self._authority.mint(member, target.audience)}"
        started, began = self._wall_clock(), time.monotonic()
        status, error = None, None
        try:
            status, answer = await self._call(target, headers)
            if not 200 <= status < 300:
                error = f"HTTP {status}: {answer.strip()}" if answer.strip() else f"HTTP {status}"
        except (httpx.HTTPError, httpx.InvalidURL) as failure:
            error = f"no answer: {str(failure) or type(failure).__name__}"
        attempt = CallAttempt(
            started_at=started,
            scheduled_for=scheduled_for,
            status_code=status,
            error=error,
            duration_seconds=round(time.monotonic() - began, 3),
        )
        with contextlib.suppress(HomerunError):  # deleted meanwhile: nothing to record
            self._store.job(job.name)
            self._store.record_attempt(job.name, attempt)
        when = f"run of {iso_time(scheduled_for)}" if scheduled_for is not None else "run now"
        if error is None:
            self._log(f"Scheduler job {job.name} ({when}): {target.uri} answered {status}")
        else:
            self._log(
                f"Scheduler job {job.name} ({when}): {target.http_method} {target.uri} failed "
                f"({error}); not retried (retry count 0, as Cloud Scheduler's default): the "
                "next scheduled run calls again",
                "ERROR",
            )
        return attempt

    # -- helpers ----------------------------------------------------------------------------

    def _view(self, job: SchedulerJobRecord) -> SchedulerJobView:
        next_run = None
        if job.state == "ENABLED":
            with contextlib.suppress(HomerunError):
                since = max(job.scheduled_at, self._wall_clock())
                next_run = next_time(parse_cron(job.schedule), since, time_zone(job.time_zone))
        return SchedulerJobView(
            name=job.name,
            schedule=job.schedule,
            time_zone=job.time_zone,
            target=job.target,
            state=job.state,
            description=job.description,
            created_at=job.created_at,
            next_run=next_run,
            attempts=self._store.attempts(job.name),
        )

    def _check_email(self, email: str) -> None:
        if "@" not in email or email != email.strip() or " " in email:
            raise InvalidSpec(
                f"--oidc-service-account-email: {email!r} is not a service account's address; "
                f"write NAME@{self._authority.project.id}.iam.gserviceaccount.com"
            )

    def _log(self, message: str, severity: str = "INFO") -> None:
        self._logs.emit(platform_entry(LOG, message, severity))
