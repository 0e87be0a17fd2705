"""The admin API: JSON over HTTP on a Unix socket; deploys stream NDJSON events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from homerun.admin.openapi import openapi_document
from homerun.control import ControlPlane
from homerun.control.job_plan import JobRequest
from homerun.control.worker_pools import PoolRequest
from homerun.errors import HomerunError, InvalidSpec, NotFound, StoreUnavailable
from homerun.knative import parse_service
from homerun.model.events import DeployEvent, JobEvent, PoolEvent
from homerun.model.images import BuildEvent, BuildRequest
from homerun.model.inspection import RampRequest
from homerun.model.jobs import ExecutionOverrides
from homerun.model.scheduler import SchedulerJobRequest
from homerun.model.validation import validation_message
from homerun.spec import DeployRequest
from homerun.traffic import TrafficUpdate


def create_app(control: ControlPlane, shutdown: Callable[[], None]) -> Starlette:
    description = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(description)

    async def status(request: Request) -> Response:
        return _view(control.views.status())

    async def stop(request: Request) -> Response:
        shutdown()
        return JSONResponse({"stopping": True})

    async def services(request: Request) -> Response:
        return _views(control.views.services())

    async def service(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await control.revisions.delete_service(name)
            return JSONResponse({"deleted": name})
        if request.method == "PUT":
            # `homerun services replace`: a Knative Service, validated before anything moves.
            document = await _json_body(request)
            manifest = parse_service(document, where=request.query_params.get("file", "it"))
            if manifest.name != name:
                raise InvalidSpec(
                    f"metadata.name: {manifest.name!r} does not match the service {name!r}"
                )
            return StreamingResponse(
                _ndjson(control.deploys.replace(manifest)), media_type="application/x-ndjson"
            )
        if request.query_params.get("format") == "knative":
            return JSONResponse(control.views.knative_service(name))
        if request.query_params.get("format") in ("export", "export-cloud-run"):
            # Reads pushes.json and the image store: off the router's loop.
            return JSONResponse(
                await asyncio.to_thread(
                    control.exports.export,
                    name,
                    cloud_run=request.query_params["format"] == "export-cloud-run",
                    image=request.query_params.get("image"),
                )
            )
        return _view(control.views.describe(name))

    async def advice(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "POST":
            # `services advise --ramp`: a bounded load on a private instance, then the advice.
            try:
                ramp = RampRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise InvalidSpec(f"invalid ramp: {validation_message(error)}") from None
            return _view(await control.ramp.run(name, ramp))
        # Reads the inspector's snapshot files: in a thread, off the router's loop.
        return _view(await asyncio.to_thread(control.advisor.advise, name))

    async def traffic(request: Request) -> Response:
        try:
            update = TrafficUpdate.model_validate_json(await request.body())
        except ValidationError as error:
            raise InvalidSpec(f"invalid traffic update: {validation_message(error)}") from None
        control.traffic.update(request.path_params["name"], update)
        return _view(control.views.service(request.path_params["name"]))

    async def revision(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await control.revisions.delete(name)
            return JSONResponse({"deleted": name})
        if request.query_params.get("format") == "knative":
            return JSONResponse(control.views.knative_revision(name))
        return _view(control.views.revision(name))

    async def secrets(request: Request) -> Response:
        if request.method == "POST":
            body = await _json_body(request)
            return _view(control.secrets.create(_field(body, "name"), _field(body, "data")))
        return _views(control.secrets.summaries())

    async def secret(request: Request) -> Response:
        control.secrets.delete(request.path_params["name"])
        return JSONResponse({"deleted": request.path_params["name"]})

    async def secret_versions(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "POST":
            body = await _json_body(request)
            return _view(control.secrets.add_version(name, _field(body, "data")))
        return _views(control.secrets.versions(name))

    async def deploy(request: Request) -> Response:
        try:
            body = DeployRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise InvalidSpec(f"invalid deploy request: {validation_message(error)}") from None
        return StreamingResponse(
            _ndjson(control.deploys.deploy(body)), media_type="application/x-ndjson"
        )

    async def iam_policy(request: Request) -> Response:
        return _view(control.iam.policy(request.path_params["name"]))

    async def iam_add(request: Request) -> Response:
        body = await _json_body(request)
        return _view(
            control.iam.add_binding(
                request.path_params["name"], _field(body, "member"), _field(body, "role")
            )
        )

    async def iam_remove(request: Request) -> Response:
        body = await _json_body(request)
        return _view(
            control.iam.remove_binding(
                request.path_params["name"], _field(body, "member"), _field(body, "role")
            )
        )

    async def tokens(request: Request) -> Response:
        body = await _json_body(request)
        audience = body.get("audience") if isinstance(body, dict) else None
        if audience is not None and not isinstance(audience, str):
            raise InvalidSpec("audience: a string (a service URL), or leave it out")
        return _view(control.iam.mint_identity_token(_field(body, "member"), audience))

    async def revisions(request: Request) -> Response:
        return _views(control.views.revisions(request.query_params.get("service")))

    async def logs(request: Request) -> Response:
        limit = _int_param(request, "limit", 50)
        filters = {
            name: request.query_params.get(name)
            for name in ("revision", "min_severity", "since", "after", "trace")
        }
        return JSONResponse(await control.views.logs(request.path_params["name"], limit, **filters))

    # Jobs and their executions

    async def jobs(request: Request) -> Response:
        return _views(control.jobs.views.jobs())

    async def job(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await control.jobs.delete(name)
            return JSONResponse({"deleted": name})
        return _view(control.jobs.views.describe(name))

    async def job_deploy(request: Request) -> Response:
        try:
            body = JobRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise InvalidSpec(f"invalid job request: {validation_message(error)}") from None
        if body.job != request.path_params["name"]:
            raise InvalidSpec(
                f"job: {body.job!r} does not match the path's {request.path_params['name']!r}"
            )
        return StreamingResponse(
            _job_ndjson(control.jobs.deploy(body)), media_type="application/x-ndjson"
        )

    async def job_executions(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "POST":
            try:
                overrides = ExecutionOverrides.model_validate_json(await request.body() or b"{}")
            except ValidationError as error:
                raise InvalidSpec(f"invalid overrides: {validation_message(error)}") from None
            execution = control.jobs.executions.execute(name, overrides)
            return _view(control.jobs.views.execution(execution.name))
        return _views(control.jobs.views.executions(name))

    async def job_logs(request: Request) -> Response:
        task = request.query_params.get("task")
        if task is not None and not task.isdigit():
            raise InvalidSpec(f"task: expected a task index (0, 1, ...), got {task!r}")
        entries = await control.jobs.views.logs(
            request.path_params["name"],
            _int_param(request, "limit", 50),
            execution=request.query_params.get("execution"),
            task=int(task) if task is not None else None,
            after=request.query_params.get("after"),
        )
        return JSONResponse(entries)

    async def executions(request: Request) -> Response:
        return _views(control.jobs.views.executions(request.query_params.get("job")))

    async def execution(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await control.jobs.executions.delete(name)
            return JSONResponse({"deleted": name})
        return _view(control.jobs.views.execution(name))

    async def execution_cancel(request: Request) -> Response:
        record = control.jobs.executions.cancel(request.path_params["name"])
        return _view(control.jobs.views.execution(record.name))

    # Worker pools

    async def domain_mappings(request: Request) -> Response:
        if request.method == "POST":
            body = await _json_body(request)
            force = body.get("force_override", False) if isinstance(body, dict) else False
            if not isinstance(force, bool):
                raise InvalidSpec("force_override: a boolean")
            return _view(
                control.domain_mappings.create(
                    _field(body, "domain"), _field(body, "service"), force_override=force
                )
            )
        return _views(control.domain_mappings.list(request.query_params.get("service")))

    async def domain_mapping(request: Request) -> Response:
        domain = request.path_params["name"]
        if request.method == "DELETE":
            control.domain_mappings.delete(domain)
            return JSONResponse({"deleted": domain})
        return _view(control.domain_mappings.describe(domain))

    async def worker_pools(request: Request) -> Response:
        return _views(control.worker_pools.pools())

    async def worker_pool(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await control.worker_pools.delete(name)
            return JSONResponse({"deleted": name})
        return _view(control.worker_pools.describe(name))

    async def worker_pool_deploy(request: Request) -> Response:
        try:
            body = PoolRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise InvalidSpec(f"invalid worker pool request: {validation_message(error)}") from None
        if body.pool != request.path_params["name"]:
            raise InvalidSpec(
                f"pool: {body.pool!r} does not match the path's {request.path_params['name']!r}"
            )
        return StreamingResponse(
            _pool_ndjson(control.worker_pools.deploy(body)), media_type="application/x-ndjson"
        )

    async def worker_pool_logs(request: Request) -> Response:
        entries = await control.worker_pools.read_logs(
            request.path_params["name"], _int_param(request, "limit", 50)
        )
        return JSONResponse(entries)

    # Scheduler jobs (Cloud Scheduler's HTTP targets)

    async def scheduler_jobs(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = SchedulerJobRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise InvalidSpec(
                    f"invalid scheduler job request: {validation_message(error)}"
                ) from None
            return _view(control.scheduler.create(body))
        return _views(control.scheduler.jobs())

    async def scheduler_job(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            control.scheduler.delete(name)
            return JSONResponse({"deleted": name})
        return _view(control.scheduler.describe(name))

    async def scheduler_job_action(request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        if action == "pause":
            return _view(control.scheduler.pause(name))
        if action == "resume":
            return _view(control.scheduler.resume(name))
        if action == "run":
            return _view(await control.scheduler.run(name))
        raise NotFound(f"no scheduler job action {action!r}: pause, resume or run")

    async def builds(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = BuildRequest.model_validate_json(await request.body())
            except ValidationError as error:
                raise InvalidSpec(f"invalid build request: {validation_message(error)}") from None
            return StreamingResponse(
                _build_ndjson(control.images.submit(body)), media_type="application/x-ndjson"
            )
        return _views(control.images.builds())

    async def images(request: Request) -> Response:
        if request.method == "DELETE":
            name = request.query_params.get("name")
            if not name:
                raise InvalidSpec("name: give the image to delete (?name=IMAGE)")
            return JSONResponse({"deleted": control.images.delete(name)})
        return _views(control.images.images())

    async def push(request: Request) -> Response:
        body = await _json_body(request)
        pushed = await asyncio.to_thread(control.images.push, _field(body, "name"))
        return _view(pushed)

    async def homerun_error(request: Request, exc: Exception) -> Response:
        status_code = (
            404 if isinstance(exc, NotFound) else 503 if isinstance(exc, StoreUnavailable) else 400
        )
        return JSONResponse({"error": str(exc)}, status_code=status_code)

    return Starlette(
        routes=[
            Route("/v1/openapi.json", openapi),
            Route("/v1/status", status),
            Route("/v1/shutdown", stop, methods=["POST"]),
            Route("/v1/services", services),
            Route("/v1/services/{name}", service, methods=["GET", "DELETE", "PUT"]),
            Route("/v1/services/{name}/advice", advice, methods=["GET", "POST"]),
            Route("/v1/services/{name}/deploy", deploy, methods=["POST"]),
            Route("/v1/services/{name}/traffic", traffic, methods=["POST"]),
            Route("/v1/services/{name}/logs", logs),
            Route("/v1/services/{name}/iam", iam_policy, methods=["GET"]),
            Route("/v1/services/{name}/iam/add", iam_add, methods=["POST"]),
            Route("/v1/services/{name}/iam/remove", iam_remove, methods=["POST"]),
            Route("/v1/tokens", tokens, methods=["POST"]),
            Route("/v1/revisions", revisions),
            Route("/v1/revisions/{name}", revision, methods=["GET", "DELETE"]),
            Route("/v1/secrets", secrets, methods=["GET", "POST"]),
            Route("/v1/secrets/{name}", secret, methods=["DELETE"]),
            Route("/v1/secrets/{name}/versions", secret_versions, methods=["GET", "POST"]),
            Route("/v1/jobs", jobs),
            Route("/v1/jobs/{name}", job, methods=["GET", "DELETE"]),
            Route("/v1/jobs/{name}/deploy", job_deploy, methods=["POST"]),
            Route("/v1/jobs/{name}/executions", job_executions, methods=["GET", "POST"]),
            Route("/v1/jobs/{name}/logs", job_logs),
            Route("/v1/executions", executions),
            Route("/v1/executions/{name}", execution, methods=["GET", "DELETE"]),
            Route("/v1/executions/{name}/cancel", execution_cancel, methods=["POST"]),
            Route("/v1/scheduler/jobs", scheduler_jobs, methods=["GET", "POST"]),
            Route("/v1/scheduler/jobs/{name}", scheduler_job, methods=["GET", "DELETE"]),
            Route("/v1/scheduler/jobs/{name}/{action}", scheduler_job_action, methods=["POST"]),
            Route("/v1/worker-pools", worker_pools),
            Route("/v1/worker-pools/{name}", worker_pool, methods=["GET", "DELETE"]),
            Route("/v1/worker-pools/{name}/deploy", worker_pool_deploy, methods=["POST"]),
            Route("/v1/worker-pools/{name}/logs", worker_pool_logs),
            Route("/v1/domain-mappings", domain_mappings, methods=["GET", "POST"]),
            Route("/v1/domain-mappings/{name}", domain_mapping, methods=["GET", "DELETE"]),
            Route("/v1/builds", builds, methods=["GET", "POST"]),
            Route("/v1/images", images, methods=["GET", "DELETE"]),
            Route("/v1/images/push", push, methods=["POST"]),
        ],
        exception_handlers={HomerunError: homerun_error},
    )


async def _ndjson(events: AsyncIterator[DeployEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event.model_dump_json().encode() + b"\n"


async def _job_ndjson(events: AsyncIterator[JobEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event.model_dump_json().encode() + b"\n"


async def _pool_ndjson(events: AsyncIterator[PoolEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event.model_dump_json().encode() + b"\n"


async def _build_ndjson(events: AsyncIterator[BuildEvent]) -> AsyncIterator[bytes]:
    async for event in events:
        yield event.model_dump_json().encode() + b"\n"


def _view(view: BaseModel) -> Response:
    return Response(view.model_dump_json(), media_type="application/json")


def _views(views: Sequence[BaseModel]) -> Response:
    body = "[" + ",".join(view.model_dump_json() for view in views) + "]"
    return Response(body, media_type="application/json")


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as error:
        raise InvalidSpec(f"the request body is not JSON: {error}") from None


def _field(body: Any, name: str) -> str:
    # The message names the field only: a secret's data must never be echoed in an error.
    if not isinstance(body, dict) or not isinstance(body.get(name), str):
        raise InvalidSpec(f"{name}: required, a string")
    return str(body[name])


# The most log entries one read returns: a read holds them all in memory, and a larger number
# (limit=1e20) is a mistake to say, not to pass on to the reader.
MAX_LIMIT = 10_000


def _int_param(request: Request, name: str, default: int, *, maximum: int = MAX_LIMIT) -> int:
    """A whole number from 1 to `maximum`: digits only (not 1e3, 1_000, -1 or 5.0)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # int() alone would take " 5", "1_000" and non-ASCII digits, and refuse 5,000 digits with
    # an error of its own.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20 or not 1 <= int(raw) <= maximum:
        raise InvalidSpec(f"{name}: expected a whole number from 1 to {maximum}, got {raw[:40]!r}")
    return int(raw)
