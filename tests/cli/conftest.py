"""A fake of homerun.client.Client, and `run` to drive `main([...], client=fake)` without a
daemon: each command in milliseconds."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homerun.build.capacity import command_capacity
from homerun.cli import main
from homerun.errors import DaemonUnavailable, HomerunError, NotFound
from homerun.model.events import (
    BuildLine,
    DeployEvent,
    Done,
    JobDeployed,
    JobEvent,
    Phase,
    PoolDeployed,
    PoolEvent,
)
from homerun.model.images import (
    BuildEvent,
    BuildRequest,
    BuildSummary,
    Built,
    ImageSummary,
    PushedImage,
)
from homerun.model.inspection import Advice, RampRequest
from homerun.model.jobs import ExecutionOverrides, TaskSettingsChanges
from homerun.model.scheduler import CallAttempt, HttpTarget, SchedulerJobRequest, SchedulerJobView
from homerun.model.states import InstanceState
from homerun.model.views import (
    Binding,
    DomainMappingView,
    ExecutionDescription,
    ExecutionSummary,
    IamPolicy,
    IdentityToken,
    InstanceView,
    JobDescription,
    JobSummary,
    PlatformStatus,
    PoolInstance,
    Readiness,
    RevisionSummary,
    Route,
    SecretSummary,
    SecretVersionCreated,
    SecretVersionView,
    ServiceDescription,
    ServiceSummary,
    Tag,
    TrafficSpec,
    WorkerPoolSummary,
)
from homerun.observe.advisor import advise
from homerun.spec import DeployRequest, RevisionChanges
from homerun.traffic import TrafficUpdate


def service_summary(name: str = "hello", **fields: Any) -> ServiceSummary:
    values: dict[str, Any] = {
        "name": name,
        "url": f"http://{name}.localhost:8080",
        "ready": True,
        "readiness": Readiness(status="True"),
        "latest_ready_revision": f"{name}-00002-abc",
        "latest_created_revision": f"{name}-00002-abc",
        "traffic": [Route(revision=f"{name}-00002-abc", percent=100)],
        "traffic_spec": [TrafficSpec(percent=100, latest=True)],
        "allow_unauthenticated": False,
        "ingress": "all",
        "invokers": [],
        "owner": "user:me",
        "created_at": 1_700_000_000.0,
        "generation": 2,
    }
    return ServiceSummary(**(values | fields))


def revision_summary(name: str = "hello-00002-abc", **fields: Any) -> RevisionSummary:
    values: dict[str, Any] = {
        "name": name,
        "service": name.split("-0")[0],
        "status": "ready",
        "message": None,
        "created_at": 1_700_000_000.0,
        "entrypoint": ["gunicorn", "main:app"],
        "entrypoint_origin": "Procfile web:",
        "concurrency": 80,
        "timeout_seconds": 300,
        "env": {"MODE": "beta"},
        "secrets": {"DB_URL": "db-url:latest"},
        "annotations": {},
        "image": None,
        "source": "/srv/hello",
        "percent": 100,
        "tags": [Tag(tag="blue", url="http://blue---hello.localhost:8080")],
        "instances": [
            InstanceView(
                name="hello-00002-abc-1",
                state=InstanceState.READY,
                pid=4242,
                port=9001,
                in_flight=1,
                age_seconds=3.0,
            )
        ],
        "in_flight": 1,
        "start_mode": None,
        "queue_length": 0,
    }
    return RevisionSummary(**(values | fields))


def done(service: str = "hello", revision: str = "hello-00003-xyz", **fields: Any) -> Done:
    values: dict[str, Any] = {
        "service": service,
        "revision": revision,
        "url": f"http://{service}.localhost:8080",
        "percent": 100,
    }
    return Done(**(values | fields))


def execution_view(name: str = "report-x7k2p", **fields: Any) -> ExecutionDescription:
    values: dict[str, Any] = {
        "name": name,
        "job": "report",
        "status": "running",
        "message": None,
        "created_at": 1_700_000_000.0,
        "completed_at": None,
        "generation": 1,
        "task_count": 3,
        "parallelism": 0,
        "max_retries": 3,
        "task_timeout_seconds": 600,
        "pending": 1,
        "running": 2,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "retries": 0,
        "cancel_requested": False,
        "entrypoint": ["python", "main.py"],
        "env": {},
        "tasks": [],
    }
    return ExecutionDescription(**(values | fields))


def job_summary(name: str = "report", **fields: Any) -> JobSummary:
    values: dict[str, Any] = {
        "name": name,
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
        "generation": 1,
        "source": "/srv/report",
        "entrypoint": ["/bin/sh", "-c", "python main.py"],
        "entrypoint_origin": "Procfile web:",
        "env": {"SLEEP_MS": "10"},
        "secrets": {},
        "cpu": None,
        "memory": None,
        "task_count": 3,
        "parallelism": 0,
        "max_retries": 3,
        "task_timeout_seconds": 600,
        "executions": 1,
        "latest_execution": ExecutionSummary(
            **execution_view(status="succeeded").model_dump(exclude={"entrypoint", "env", "tasks"})
        ),
    }
    return JobSummary(**(values | fields))


def scheduler_job(name: str, target: HttpTarget | None = None) -> SchedulerJobView:
    return SchedulerJobView(
        name=name,
        schedule="0 3 * * *",
        time_zone="UTC",
        target=target or HttpTarget(uri="http://report.localhost:8080/run"),
        state="ENABLED",
        created_at=1_796_378_430.0,
        next_run=1_796_443_200.0,
    )


class FakeClient:
    """homerun.client.Client's methods over canned views; `calls` records what was asked.
    tests/cli/test_fake_client.py keeps its methods in step with the real ones."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.running = True
        self.existing = {"hello"}  # other services are new: iam_policy answers NotFound
        self.service_views = [service_summary()]
        self.revision_views = [revision_summary()]
        self.events: list[DeployEvent] = [
            Phase(message="Starting revision hello-00003-xyz"),
            done(),
        ]
        self.secret_views = [
            SecretSummary(
                name="db-url",
                versions=2,
                latest=2,
                created_at=1_700_000_000.0,
                used_by=["hello-00002-abc"],
            )
        ]
        self.job_events: list[JobEvent] = [
            Phase(message="Building job report from /srv/report"),
            JobDeployed(job="report", generation=1, created=True, entrypoint="python main.py"),
        ]
        self.execution_views: list[ExecutionDescription] = [execution_view()]
        # The seed's Flask Dockerfile (gunicorn 1 x 8) behind the default --concurrency 80.
        self.advice = advise(
            service="hello",
            revision="hello-00002-abc",
            concurrency=80,
            declared=command_capacity(
                ["/bin/sh", "-c", "exec gunicorn --bind :$PORT --workers 1 --threads 8 main:app"],
                {},
            ),
            inspection=None,
        )
        self.build_events: list[BuildEvent] = [
            Phase(message="Building gcr.io/my-project/hello:latest from /srv/hello"),
            BuildLine(line="Successfully installed flask"),
            Built(
                build="0b6a3c4e-1111-2222-3333-444455556666",
                image="gcr.io/my-project/hello:latest",
                digest="sha256:" + "ab" * 32,
                duration_seconds=12.5,
            ),
        ]
        self.log_entries: list[dict[str, Any]] = [
            {
                "timestamp": "2026-11-25T10:00:00.000000Z",
                "severity": "INFO",
                "service": "hello",
                "revision": "hello-00002-abc",
                "message": "GET / 200",
            }
        ]

    def _record(self, name: str, *arguments: Any) -> None:
        self.calls.append((name, arguments))
        if not self.running:
            raise DaemonUnavailable("no homerun daemon answers at the fake")

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [arguments for called, arguments in self.calls if called == name]

    def close(self) -> None:
        pass

    def status(self) -> PlatformStatus:
        self._record("status")
        return PlatformStatus(
            pid=4242,
            router="http://127.0.0.1:8080",
            dashboard="http://127.0.0.1:8081",
            services=len(self.service_views),
            revisions=len(self.revision_views),
            instances=1,
        )

    def shutdown(self) -> None:
        self._record("shutdown")
        self.running = False

    def services(self) -> list[ServiceSummary]:
        self._record("services")
        return self.service_views

    def describe(self, service: str) -> ServiceDescription:
        self._record("describe", service)
        summary = self._service(service)
        return ServiceDescription(**summary.model_dump(), revisions=self.revision_views)

    def advise(self, service: str, ramp: RampRequest | None = None) -> Advice:
        self._record("advise", service, ramp)
        self._service(service)
        return self.advice

    def knative_service(self, service: str) -> dict[str, Any]:
        self._record("knative_service", service)
        view = self._service(service)
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": service},
            "status": {
                "conditions": [{"type": "Ready", **view.readiness.model_dump(exclude_none=True)}],
                "url": view.url,
            },
        }

    def export_service(
        self, service: str, *, cloud_run: bool = False, image: str | None = None
    ) -> dict[str, Any]:
        self._record("export_service", service, cloud_run, image)
        self._service(service)
        image = image or f"registry.example.com/{service}@sha256:{'0' * 64}"
        container: dict[str, Any] = {"image": image}
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": service},
            "spec": {"template": {"spec": {"containers": [container]}}},
            "cloud_run": cloud_run,  # which form was asked for, for the tests to see
        }

    def deploy(self, request: DeployRequest) -> Iterator[DeployEvent]:
        self._record("deploy", request)
        return iter(self.events)

    def replace(self, service: str, document: dict[str, Any], file: str) -> Iterator[DeployEvent]:
        self._record("replace", service, document, file)
        return iter(self.events)

    def update_traffic(self, service: str, update: TrafficUpdate) -> ServiceSummary:
        self._record("update_traffic", service, update)
        return self._service(service)

    def delete(self, service: str) -> None:
        self._record("delete", service)
        self._service(service)

    def revisions(self, service: str | None = None) -> list[RevisionSummary]:
        self._record("revisions", service)
        return self.revision_views

    def revision(self, name: str) -> RevisionSummary:
        self._record("revision", name)
        return self._revision(name)

    def knative_revision(self, name: str) -> dict[str, Any]:
        self._record("knative_revision", name)
        self._revision(name)
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": {"name": name},
        }

    def delete_revision(self, name: str) -> None:
        self._record("delete_revision", name)
        self._revision(name)

    def secrets(self) -> list[SecretSummary]:
        self._record("secrets")
        return self.secret_views

    def create_secret(self, name: str, data: str) -> SecretVersionCreated:
        self._record("create_secret", name, data)
        return SecretVersionCreated(name=name, version=1)

    def secret_versions(self, name: str) -> list[SecretVersionView]:
        self._record("secret_versions", name)
        return [
            SecretVersionView(version=1, created_at=1_700_000_000.0, size=12),
            SecretVersionView(version=2, created_at=1_700_000_600.0, size=14),
        ]

    def add_secret_version(self, name: str, data: str) -> SecretVersionCreated:
        self._record("add_secret_version", name, data)
        return SecretVersionCreated(name=name, version=3)

    def delete_secret(self, name: str) -> None:
        self._record("delete_secret", name)

    def logs(self, service: str, limit: int, **filters: str | None) -> list[dict[str, Any]]:
        self._record("logs", service, limit, filters)
        return self.log_entries if filters.get("after") is None else []

    def iam_policy(self, service: str) -> IamPolicy:
        self._record("iam_policy", service)
        self._service(service)
        return IamPolicy(bindings=[])

    def add_iam_binding(self, service: str, member: str, role: str) -> IamPolicy:
        self._record("add_iam_binding", service, member, role)
        return IamPolicy(bindings=[Binding(members=[member], role=role)])

    def remove_iam_binding(self, service: str, member: str, role: str) -> IamPolicy:
        self._record("remove_iam_binding", service, member, role)
        return IamPolicy(bindings=[])

    def identity_token(self, member: str, audience: str | None) -> IdentityToken:
        self._record("identity_token", member, audience)
        return IdentityToken(token="aaa.bbb.ccc", member=member, audience=audience or "homerun")

    def _service(self, name: str) -> ServiceSummary:
        if name not in self.existing:
            raise NotFound(f"service {name!r} not found")
        return next(
            (view for view in self.service_views if view.name == name), service_summary(name)
        )

    def _revision(self, name: str) -> RevisionSummary:
        for view in self.revision_views:
            if view.name == name:
                return view
        raise NotFound(f"revision {name!r} not found")

    # Jobs: one job `report`, one execution of it; `job_events` is what a job deploy streams,
    # `execution_views` what successive reads of an execution answer (the last one sticks).

    def jobs(self) -> list[JobSummary]:
        self._record("jobs")
        return [job_summary()]

    def job(self, name: str) -> JobDescription:
        self._record("job", name)
        if name != "report":
            raise NotFound(f"job {name!r} not found")
        return JobDescription(**job_summary().model_dump(), recent_executions=[execution_view()])

    def deploy_job(
        self,
        job: str,
        changes: RevisionChanges,
        settings: TaskSettingsChanges,
        mode: str,
        schedule: str | None = None,
        time_zone: str | None = None,
    ) -> Iterator[JobEvent]:
        self._record("deploy_job", job, changes, settings, mode, schedule, time_zone)
        return iter(self.job_events)

    def delete_job(self, name: str) -> None:
        self._record("delete_job", name)

    def execute_job(self, job: str, overrides: ExecutionOverrides) -> ExecutionDescription:
        self._record("execute_job", job, overrides)
        return self.execution_views[0]

    def executions(self, job: str | None = None) -> list[ExecutionSummary]:
        self._record("executions", job)
        return [execution_view()]

    def execution(self, name: str) -> ExecutionDescription:
        self._record("execution", name)
        views = self.execution_views
        return views.pop(0) if len(views) > 1 else views[0]

    def cancel_execution(self, name: str) -> ExecutionDescription:
        self._record("cancel_execution", name)
        return execution_view(cancel_requested=True)

    def delete_execution(self, name: str) -> None:
        self._record("delete_execution", name)

    def job_logs(
        self,
        job: str,
        limit: int,
        execution: str | None = None,
        task: int | None = None,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        self._record("job_logs", job, limit, execution, task, after)
        if after is not None:
            return []  # a tail's next poll: nothing new
        return [
            {
                "timestamp": "2026-11-25T10:00:00.000000Z",
                "severity": "DEFAULT",
                "job": job,
                "execution": "report-x7k2p",
                "task": 3,
                "attempt": 1,
                "message": "Completed Task #3.",
            }
        ]

    def domain_mappings(self, service: str | None = None) -> list[DomainMappingView]:
        self._record("domain_mappings", service)
        return [mapping_view()]

    def domain_mapping(self, domain: str) -> DomainMappingView:
        self._record("domain_mapping", domain)
        if domain != "app.example.com":
            raise NotFound(f"domain mapping {domain!r} not found")
        return mapping_view()

    def create_domain_mapping(
        self, domain: str, service: str, *, force_override: bool = False
    ) -> DomainMappingView:
        self._record("create_domain_mapping", domain, service, force_override)
        return mapping_view(domain=domain, service=service)

    def delete_domain_mapping(self, domain: str) -> None:
        self._record("delete_domain_mapping", domain)

    def worker_pools(self) -> list[WorkerPoolSummary]:
        self._record("worker_pools")
        return [pool_summary()]

    def worker_pool(self, name: str) -> WorkerPoolSummary:
        self._record("worker_pool", name)
        if name != "consumer":
            raise NotFound(f"worker pool {name!r} not found")
        return pool_summary()

    def deploy_worker_pool(
        self, pool: str, changes: RevisionChanges, instances: int | None
    ) -> Iterator[PoolEvent]:
        self._record("deploy_worker_pool", pool, changes, instances)
        deployed = PoolDeployed(pool=pool, revision=f"{pool}-00002", instances=instances or 1)
        return iter([Phase(message=f"Building worker pool {pool}"), deployed])

    def delete_worker_pool(self, name: str) -> None:
        self._record("delete_worker_pool", name)

    # Scheduler jobs

    def create_scheduler_job(self, request: SchedulerJobRequest) -> SchedulerJobView:
        self._record("create_scheduler_job", request)
        return scheduler_job(request.name, request.target)

    def scheduler_jobs(self) -> list[SchedulerJobView]:
        self._record("scheduler_jobs")
        return [scheduler_job("nightly")]

    def scheduler_job(self, name: str) -> SchedulerJobView:
        self._record("scheduler_job", name)
        if name != "nightly":
            raise NotFound(f"scheduler job {name!r} not found")
        return scheduler_job(name)

    def delete_scheduler_job(self, name: str) -> None:
        self._record("delete_scheduler_job", name)

    def scheduler_job_action(self, name: str, action: str) -> SchedulerJobView:
        self._record("scheduler_job_action", name, action)
        job = scheduler_job(name)
        return job.model_copy(update={"state": "PAUSED" if action == "pause" else "ENABLED"})

    def run_scheduler_job(self, name: str) -> CallAttempt:
        self._record("run_scheduler_job", name)
        return CallAttempt(started_at=1_796_378_430.0, status_code=403, error="HTTP 403: no")

    def worker_pool_logs(self, name: str, limit: int) -> list[dict[str, Any]]:
        self._record("worker_pool_logs", name, limit)
        return [
            {
                "timestamp": "2026-11-25T10:00:00.000000Z",
                "severity": "DEFAULT",
                "service": name,
                "instance": f"{name}-00001-0-0",
                "message": "took job 7",
            }
        ]

    def submit_build(self, request: BuildRequest) -> Iterator[BuildEvent]:
        self._record("submit_build", request)
        return iter(self.build_events)

    def builds(self) -> list[BuildSummary]:
        self._record("builds")
        return [
            BuildSummary(
                id="0b6a3c4e-1111-2222-3333-444455556666",
                created_at=1_700_000_000.0,
                duration_seconds=12.5,
                source="/srv/hello",
                images=["gcr.io/my-project/hello:latest"],
                status="SUCCESS",
                digest="sha256:" + "ab" * 32,
            )
        ]

    def images(self) -> list[ImageSummary]:
        self._record("images")
        return [
            ImageSummary(
                name="gcr.io/my-project/hello:latest",
                digest="sha256:" + "ab" * 32,
                created_at=1_700_000_000.0,
            )
        ]

    def push_image(self, name: str) -> PushedImage:
        self._record("push_image", name)
        digest = "sha256:" + "cd" * 32
        return PushedImage(name=name, digest=digest, pinned=f"{name.rsplit(':', 1)[0]}@{digest}")

    def delete_image(self, name: str) -> list[str]:
        self._record("delete_image", name)
        return [name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"]


def mapping_view(**fields: Any) -> DomainMappingView:
    values: dict[str, Any] = {
        "domain": "app.example.com",
        "service": "hello",
        "created_at": 1_700_000_000.0,
        "ready": True,
        "reason": "",
        "url": "http://app.example.com:8080",
        "https_url": None,
        "certificate": "none: no HTTPS listener (set https-port in config.yaml)",
        "reach": "the router listens on 127.0.0.1:8080: point app.example.com at this machine",
    }
    return DomainMappingView(**{**values, **fields})


def pool_summary(**fields: Any) -> WorkerPoolSummary:
    values: dict[str, Any] = {
        "name": "consumer",
        "revision": "consumer-00001",
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_000.0,
        "source": "/srv/consumer",
        "entrypoint": ["/bin/sh", "-c", "python worker.py"],
        "entrypoint_origin": "Procfile web:",
        "env": {"QUEUE": "jobs"},
        "secrets": {},
        "cpu": None,
        "memory": None,
        "instances": 2,
        "running": 1,
        "slots": [
            PoolInstance(index=0, pid=4242, started_at=1_700_000_000.0, restarts=0, last_exit=None),
            PoolInstance(
                index=1,
                pid=None,
                started_at=1_700_000_000.0,
                restarts=2,
                last_exit="exit code 1",
                restart_at=1_700_000_040.0,
            ),
        ],
    }
    return WorkerPoolSummary(**(values | fields))


@dataclass
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


class Terminal(io.StringIO):
    """stdin as a terminal where the user has typed `text`."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOMERUN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HOMERUN_URL", raising=False)
    return tmp_path / "home"


@pytest.fixture
def run(
    fake: FakeClient,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """`run("services", "list")`: main over the fake; `typed="y\\n"` makes stdin a terminal
    with that answer typed, else stdin is not a terminal (as in scripts)."""

    def invoke(*argv: str, typed: str | None = None) -> Result:
        stdin = Terminal(typed) if typed is not None else io.StringIO("")
        monkeypatch.setattr("sys.stdin", stdin)
        try:
            code = main(list(argv), client=fake)  # type: ignore[arg-type]
        except HomerunError as error:  # main must turn these into exit codes
            pytest.fail(f"main let {error!r} through")
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "main.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    return folder
