"""The admin API: JSON over HTTP on a Unix socket; deploys stream NDJSON events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from homerun.control import ControlPlane
from homerun.errors import HomerunError, InvalidSpec, NotFound
from homerun.spec import DeployRequest


def create_app(control: ControlPlane, shutdown: Callable[[], None]) -> Starlette:
    async def status(request: Request) -> Response:
        return JSONResponse(control.status())

    async def stop(request: Request) -> Response:
        shutdown()
        return JSONResponse({"stopping": True})

    async def services(request: Request) -> Response:
        return JSONResponse(control.list_services())

    async def service(request: Request) -> Response:
        name = request.path_params["name"]
        if request.method == "DELETE":
            await control.delete_service(name)
            return JSONResponse({"deleted": name})
        return JSONResponse(control.describe(name))

    async def deploy(request: Request) -> Response:
        try:
            body = DeployRequest.model_validate_json(await request.body())
        except ValidationError as error:
            raise InvalidSpec(_validation_message(error)) from None
        return StreamingResponse(_ndjson(control.deploy(body)), media_type="application/x-ndjson")

    async def revisions(request: Request) -> Response:
        return JSONResponse(control.list_revisions(request.query_params.get("service")))

    async def logs(request: Request) -> Response:
        limit = _int_param(request, "limit", 50)
        filters = {
            name: request.query_params.get(name)
            for name in ("revision", "min_severity", "since", "after")
        }
        return JSONResponse(control.read_logs(request.path_params["name"], limit, **filters))

    async def homerun_error(request: Request, exc: Exception) -> Response:
        status_code = 404 if isinstance(exc, NotFound) else 400
        return JSONResponse({"error": str(exc)}, status_code=status_code)

    return Starlette(
        routes=[
            Route("/v1/status", status),
            Route("/v1/shutdown", stop, methods=["POST"]),
            Route("/v1/services", services),
            Route("/v1/services/{name}", service, methods=["GET", "DELETE"]),
            Route("/v1/services/{name}/deploy", deploy, methods=["POST"]),
            Route("/v1/services/{name}/logs", logs),
            Route("/v1/revisions", revisions),
        ],
        exception_handlers={HomerunError: homerun_error},
    )


async def _ndjson(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for event in events:
        yield json.dumps(event).encode() + b"\n"


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidSpec(f"{name}: expected a whole number, got {raw!r}") from None
    if value < 1:
        raise InvalidSpec(f"{name}: must be at least 1, got {value}")
    return value


def _validation_message(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        problems.append(f"{location}: {item['msg']}")
    return "invalid deploy request: " + "; ".join(problems)
