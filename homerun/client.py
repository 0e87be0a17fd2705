"""Talks to the daemon's admin API, over its Unix socket or over TCP with the admin token
(HOMERUN_URL and HOMERUN_TOKEN), and returns its answers as the views in homerun.model."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from homerun.errors import DaemonUnavailable, HomerunError, NotFound
from homerun.model.events import (
    DeployEvent,
    JobEvent,
    PoolEvent,
    parse_event,
    parse_job_event,
    parse_pool_event,
)
from homerun.model.images import (
    BuildEvent,
    BuildRequest,
    BuildSummary,
    ImageSummary,
    PushedImage,
    parse_build_event,
)
from homerun.model.inspection import Advice, RampRequest
from homerun.model.jobs import ExecutionOverrides, TaskSettingsChanges
from homerun.model.logs import LogEntry
from homerun.model.scheduler import CallAttempt, SchedulerJobRequest, SchedulerJobView
from homerun.model.validation import validation_message
from homerun.model.views import (
    DomainMappingView,
    ExecutionDescription,
    ExecutionSummary,
    IamPolicy,
    IdentityToken,
    JobDescription,
    JobSummary,
    PlatformStatus,
    RevisionSummary,
    SecretSummary,
    SecretVersionCreated,
    SecretVersionView,
    ServiceDescription,
    ServiceSummary,
    WorkerPoolSummary,
)
from homerun.spec import DeployRequest, RevisionChanges
from homerun.traffic import TrafficUpdate

View = TypeVar("View", bound=BaseModel)
Event = TypeVar("Event")


def remote_target() -> tuple[str, str] | None:
    """(HOMERUN_URL, HOMERUN_TOKEN) when the CLI should talk to a daemon's TCP admin listener."""
    url = os.environ.get("HOMERUN_URL")
    if not url:
        return None
    token = os.environ.get("HOMERUN_TOKEN", "")
    if not token:
        raise HomerunError(
            "HOMERUN_URL is set but HOMERUN_TOKEN is not: set it to the content of "
            "HOMERUN_HOME/admin-token on the daemon's machine"
        )
    return url.rstrip("/"), token.strip()


def connect(socket_path: Path) -> Client:
    """The daemon at HOMERUN_URL when set, else the one whose socket is `socket_path`."""
    remote = remote_target()
    if remote is not None:
        return Client(url=remote[0], token=remote[1])
    return Client(socket_path)


class Client:
    """One method per admin API call. Knative documents and log entries stay dicts: they are
    documents to print, not values the CLI reads."""

    def __init__(
        self, socket_path: Path | None = None, *, url: str | None = None, token: str = ""
    ) -> None:
        timeout = httpx.Timeout(30.0, read=None)
        if url is not None:
            self._where = url
            self._http = httpx.Client(
                base_url=url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=timeout,
                trust_env=False,
            )
            return
        if socket_path is None:
            raise ValueError("a Client needs a socket path or an URL")
        self._where = str(socket_path)
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)),
            base_url="http://homerun",
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    # The platform

    def status(self) -> PlatformStatus:
        return _read(PlatformStatus, self._call("GET", "/v1/status", timeout=5.0))

    def shutdown(self) -> None:
        try:
            self._call("POST", "/v1/shutdown")
        except DaemonHungUp:
            pass  # a daemon that hangs up while it stops has done what was asked

    # Services

    def services(self) -> list[ServiceSummary]:
        return _read_list(ServiceSummary, self._call("GET", "/v1/services"))

    def describe(self, service: str) -> ServiceDescription:
        return _read(ServiceDescription, self._call("GET", f"/v1/services/{service}"))

    def advise(self, service: str, ramp: RampRequest | None = None) -> Advice:
        """The concurrency to set for the service's latest revision, and why; with `ramp`,
        after a bounded load on a private instance of it (which takes its duration)."""
        if ramp is None:
            return _read(Advice, self._call("GET", f"/v1/services/{service}/advice"))
        # The ramp's own time, its instance's start (up to the startup timeout) and a margin.
        timeout = ramp.duration_seconds + 300.0
        answer = self._call(
            "POST",
            f"/v1/services/{service}/advice",
            json=ramp.model_dump(mode="json"),
            timeout=timeout,
        )
        return _read(Advice, answer)

    def knative_service(self, service: str) -> dict[str, Any]:
        """The service as a serving.knative.dev/v1 Service document."""
        document: dict[str, Any] = self._call(
            "GET", f"/v1/services/{service}", params={"format": "knative"}
        )
        return document

    def deploy(self, request: DeployRequest) -> Iterator[DeployEvent]:
        """The deploy's events as they happen; the last one is `done` or `error`."""
        return self._stream(
            "POST",
            f"/v1/services/{request.service}/deploy",
            json=request.model_dump(mode="json"),
        )

    def replace(self, service: str, document: dict[str, Any], file: str) -> Iterator[DeployEvent]:
        """`services replace`: events as for a deploy (a changed template builds one)."""
        return self._stream("PUT", f"/v1/services/{service}", json=document, params={"file": file})

    def update_traffic(self, service: str, update: TrafficUpdate) -> ServiceSummary:
        answer = self._call(
            "POST", f"/v1/services/{service}/traffic", json=update.model_dump(mode="json")
        )
        return _read(ServiceSummary, answer)

    def delete(self, service: str) -> None:
        self._call("DELETE", f"/v1/services/{service}")

    # Revisions

    def revisions(self, service: str | None = None) -> list[RevisionSummary]:
        params = {"service": service} if service else {}
        return _read_list(RevisionSummary, self._call("GET", "/v1/revisions", params=params))

    def revision(self, name: str) -> RevisionSummary:
        return _read(RevisionSummary, self._call("GET", f"/v1/revisions/{name}"))

    def export_service(
        self, service: str, *, cloud_run: bool = False, image: str | None = None
    ) -> dict[str, Any]:
        """The serving revision as a Knative Service (or Cloud Run's form of it) for another
        cluster: the pushed image, by digest."""
        params = {"format": "export-cloud-run" if cloud_run else "export"}
        if image is not None:
            params["image"] = image
        document: dict[str, Any] = self._call("GET", f"/v1/services/{service}", params=params)
        return document

    def knative_revision(self, name: str) -> dict[str, Any]:
        """The revision as a serving.knative.dev/v1 Revision document."""
        document: dict[str, Any] = self._call(
            "GET", f"/v1/revisions/{name}", params={"format": "knative"}
        )
        return document

    def delete_revision(self, name: str) -> None:
        self._call("DELETE", f"/v1/revisions/{name}")

    # Secrets

    def secrets(self) -> list[SecretSummary]:
        return _read_list(SecretSummary, self._call("GET", "/v1/secrets"))

    def create_secret(self, name: str, data: str) -> SecretVersionCreated:
        answer = self._call("POST", "/v1/secrets", json={"name": name, "data": data})
        return _read(SecretVersionCreated, answer)

    def secret_versions(self, name: str) -> list[SecretVersionView]:
        return _read_list(SecretVersionView, self._call("GET", f"/v1/secrets/{name}/versions"))

    def add_secret_version(self, name: str, data: str) -> SecretVersionCreated:
        answer = self._call("POST", f"/v1/secrets/{name}/versions", json={"data": data})
        return _read(SecretVersionCreated, answer)

    def delete_secret(self, name: str) -> None:
        self._call("DELETE", f"/v1/secrets/{name}")

    # Logs

    def logs(self, service: str, limit: int, **filters: str | None) -> list[LogEntry]:
        """Newest entries; filters: revision, min_severity, since, after, trace."""
        params: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = limit
        return _entries(self._call("GET", f"/v1/services/{service}/logs", params=params))

    # Access

    def iam_policy(self, service: str) -> IamPolicy:
        return _read(IamPolicy, self._call("GET", f"/v1/services/{service}/iam"))

    def add_iam_binding(self, service: str, member: str, role: str) -> IamPolicy:
        body = {"member": member, "role": role}
        return _read(IamPolicy, self._call("POST", f"/v1/services/{service}/iam/add", json=body))

    def remove_iam_binding(self, service: str, member: str, role: str) -> IamPolicy:
        body = {"member": member, "role": role}
        answer = self._call("POST", f"/v1/services/{service}/iam/remove", json=body)
        return _read(IamPolicy, answer)

    def identity_token(self, member: str, audience: str | None) -> IdentityToken:
        answer = self._call("POST", "/v1/tokens", json={"member": member, "audience": audience})
        return _read(IdentityToken, answer)

    # Jobs and executions

    def jobs(self) -> list[JobSummary]:
        return _read_list(JobSummary, self._call("GET", "/v1/jobs"))

    def job(self, name: str) -> JobDescription:
        return _read(JobDescription, self._call("GET", f"/v1/jobs/{name}"))

    def deploy_job(
        self,
        job: str,
        changes: RevisionChanges,
        settings: TaskSettingsChanges,
        mode: str,
        schedule: str | None = None,
        time_zone: str | None = None,
    ) -> Iterator[JobEvent]:
        """`jobs create|deploy|update` (mode): the build's events, the last `job` or `error`.
        `schedule` "" removes the job's; None keeps it."""
        body = {
            "job": job,
            "changes": changes.model_dump(mode="json"),
            "settings": settings.model_dump(mode="json"),
            "mode": mode,
            "schedule": schedule,
            "time_zone": time_zone,
        }
        return self._stream_lines("POST", f"/v1/jobs/{job}/deploy", _job_event, json=body)

    def delete_job(self, name: str) -> None:
        self._call("DELETE", f"/v1/jobs/{name}")

    def execute_job(self, job: str, overrides: ExecutionOverrides) -> ExecutionDescription:
        answer = self._call(
            "POST", f"/v1/jobs/{job}/executions", json=overrides.model_dump(mode="json")
        )
        return _read(ExecutionDescription, answer)

    def executions(self, job: str | None = None) -> list[ExecutionSummary]:
        params = {"job": job} if job else {}
        return _read_list(ExecutionSummary, self._call("GET", "/v1/executions", params=params))

    def execution(self, name: str) -> ExecutionDescription:
        return _read(ExecutionDescription, self._call("GET", f"/v1/executions/{name}"))

    def cancel_execution(self, name: str) -> ExecutionDescription:
        answer = self._call("POST", f"/v1/executions/{name}/cancel")
        return _read(ExecutionDescription, answer)

    def delete_execution(self, name: str) -> None:
        self._call("DELETE", f"/v1/executions/{name}")

    def job_logs(
        self,
        job: str,
        limit: int,
        execution: str | None = None,
        task: int | None = None,
        after: str | None = None,
    ) -> list[LogEntry]:
        """A job's newest log entries; of one execution, and one task of it, when given; only
        those written after `after` when given."""
        params: dict[str, Any] = {"limit": limit}
        if execution is not None:
            params["execution"] = execution
        if task is not None:
            params["task"] = task
        if after is not None:
            params["after"] = after
        return _entries(self._call("GET", f"/v1/jobs/{job}/logs", params=params))

    # Domain mappings

    def domain_mappings(self, service: str | None = None) -> list[DomainMappingView]:
        params = {"service": service} if service else {}
        return _read_list(
            DomainMappingView, self._call("GET", "/v1/domain-mappings", params=params)
        )

    def domain_mapping(self, domain: str) -> DomainMappingView:
        path = f"/v1/domain-mappings/{quote(domain, safe='')}"
        return _read(DomainMappingView, self._call("GET", path))

    def create_domain_mapping(
        self, domain: str, service: str, *, force_override: bool = False
    ) -> DomainMappingView:
        body = {"domain": domain, "service": service, "force_override": force_override}
        return _read(DomainMappingView, self._call("POST", "/v1/domain-mappings", json=body))

    def delete_domain_mapping(self, domain: str) -> None:
        self._call("DELETE", f"/v1/domain-mappings/{quote(domain, safe='')}")

    # Worker pools

    def worker_pools(self) -> list[WorkerPoolSummary]:
        return _read_list(WorkerPoolSummary, self._call("GET", "/v1/worker-pools"))

    def worker_pool(self, name: str) -> WorkerPoolSummary:
        return _read(WorkerPoolSummary, self._call("GET", f"/v1/worker-pools/{name}"))

    def deploy_worker_pool(
        self, pool: str, changes: RevisionChanges, instances: int | None
    ) -> Iterator[PoolEvent]:
        """`worker-pools deploy`: the build's events, the last `pool` or `error`."""
        body = {"pool": pool, "changes": changes.model_dump(mode="json"), "instances": instances}
        return self._stream_lines("POST", f"/v1/worker-pools/{pool}/deploy", _pool_event, json=body)

    def delete_worker_pool(self, name: str) -> None:
        self._call("DELETE", f"/v1/worker-pools/{name}")

    def worker_pool_logs(self, name: str, limit: int) -> list[LogEntry]:
        return _entries(self._call("GET", f"/v1/worker-pools/{name}/logs", params={"limit": limit}))

    # Scheduler jobs

    def create_scheduler_job(self, request: SchedulerJobRequest) -> SchedulerJobView:
        return _read(
            SchedulerJobView,
            self._call("POST", "/v1/scheduler/jobs", json=request.model_dump(mode="json")),
        )

    def scheduler_jobs(self) -> list[SchedulerJobView]:
        return _read_list(SchedulerJobView, self._call("GET", "/v1/scheduler/jobs"))

    def scheduler_job(self, name: str) -> SchedulerJobView:
        return _read(SchedulerJobView, self._call("GET", f"/v1/scheduler/jobs/{name}"))

    def delete_scheduler_job(self, name: str) -> None:
        self._call("DELETE", f"/v1/scheduler/jobs/{name}")

    def scheduler_job_action(self, name: str, action: str) -> SchedulerJobView:
        """pause or resume: the job after it."""
        return _read(SchedulerJobView, self._call("POST", f"/v1/scheduler/jobs/{name}/{action}"))

    def run_scheduler_job(self, name: str) -> CallAttempt:
        return _read(CallAttempt, self._call("POST", f"/v1/scheduler/jobs/{name}/run"))

    # Builds and images

    def submit_build(self, request: BuildRequest) -> Iterator[BuildEvent]:
        """The build's events as they happen; the last one is `built` or `error`."""
        return self._stream_lines(
            "POST", "/v1/builds", _build_event, content=request.model_dump_json()
        )

    def builds(self) -> list[BuildSummary]:
        return _read_list(BuildSummary, self._call("GET", "/v1/builds"))

    def images(self) -> list[ImageSummary]:
        return _read_list(ImageSummary, self._call("GET", "/v1/images"))

    def push_image(self, name: str) -> PushedImage:
        return _read(PushedImage, self._call("POST", "/v1/images/push", json={"name": name}))

    def delete_image(self, name: str) -> list[str]:
        answer = self._call("DELETE", "/v1/images", params={"name": name})
        return [str(deleted) for deleted in answer.get("deleted", [])]

    def _stream_lines(
        self, method: str, path: str, parse: Callable[[str], Event], **kwargs: Any
    ) -> Iterator[Event]:
        """An NDJSON answer, each line parsed as it comes (as `_stream` for deploys)."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code != 200:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if line:
                        yield parse(line)
        except (httpx.ConnectError, FileNotFoundError) as error:
            raise self._unavailable(error) from None
        except httpx.RemoteProtocolError as error:
            raise HomerunError(f"the daemon closed the connection midway: {error}") from None

    # The exchange

    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[DeployEvent]:
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code != 200:
                    response.read()
                    _raise_for(response)
                for line in response.iter_lines():
                    if line:
                        yield _event(line)
        except (httpx.ConnectError, FileNotFoundError) as error:
            raise self._unavailable(error) from None
        except httpx.RemoteProtocolError as error:
            raise HomerunError(
                f"the daemon closed the connection during the deploy: {error}"
            ) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError, httpx.ReadTimeout) as error:
            raise self._unavailable(error) from None
        except httpx.HTTPError as error:
            raise DaemonHungUp(
                f"the daemon at {self._where} broke off the exchange ({error}); "
                "`homerun status` tells whether it still runs"
            ) from None
        _raise_for(response)
        return response.json()

    def _unavailable(self, error: Exception) -> DaemonUnavailable:
        return DaemonUnavailable(f"no homerun daemon answers at {self._where} ({error})")


class DaemonHungUp(HomerunError):
    """The daemon closed the connection before it answered."""


class UnreadableAnswer(HomerunError):
    """The daemon answered with something this CLI cannot read: another homerun version."""


def _entries(answer: Any) -> list[LogEntry]:
    """Log entries as the daemon answers them: what its LogStore holds, which homerun wrote."""
    return cast(list[LogEntry], answer)


def _read(view: type[View], answer: Any) -> View:
    try:
        return view.model_validate(answer)
    except ValidationError as error:
        raise _unreadable(view, error) from None


def _read_list(view: type[View], answer: Any) -> list[View]:
    if not isinstance(answer, list):
        raise UnreadableAnswer(
            f"the daemon answered {type(answer).__name__} where a list of {view.__name__} "
            "was expected; are the daemon and this CLI the same homerun version?"
        )
    try:
        return [view.model_validate(item) for item in answer]
    except ValidationError as error:
        raise _unreadable(view, error) from None


def _unreadable(view: type[BaseModel], error: ValidationError) -> UnreadableAnswer:
    return UnreadableAnswer(
        f"the daemon's answer does not read as {view.__name__}: {validation_message(error)}; "
        "are the daemon and this CLI the same homerun version? (`homerun down` stops an older "
        "daemon; the next deploy starts this one)"
    )


def _event(line: str) -> DeployEvent:
    return _read_event(parse_event, "a deploy", line)


def _build_event(line: str) -> BuildEvent:
    return _read_event(parse_build_event, "a build", line)


def _job_event(line: str) -> JobEvent:
    return _read_event(parse_job_event, "a job", line)


def _pool_event(line: str) -> PoolEvent:
    return _read_event(parse_pool_event, "a worker pool", line)


def _read_event(parse: Callable[[str], Event], what: str, line: str) -> Event:
    """One line of a streamed answer, or what to do when it does not read."""
    try:
        return parse(line)
    except ValidationError as error:
        raise UnreadableAnswer(
            f"the daemon sent {what} event this CLI cannot read: "
            f"{validation_message(error)}; are the daemon and this CLI the same homerun version?"
        ) from None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    if response.status_code == 401:
        raise HomerunError(
            f"the daemon at {response.request.url.host} refused the admin token: set "
            "HOMERUN_TOKEN to the content of HOMERUN_HOME/admin-token on its machine"
        )
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        message = response.text or f"HTTP {response.status_code}"
    raise (NotFound if response.status_code == 404 else HomerunError)(message)
