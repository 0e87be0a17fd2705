"""The admin API's OpenAPI 3.1 description, served at /v1/openapi.json (schemathesis reads it).

Request bodies that the API validates with pydantic take their schemas from the models, so the
description cannot drift from what the API accepts; tests/admin/test_openapi.py checks that
every route of the app is described and nothing else.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from homerun.control.job_plan import JobRequest
from homerun.control.worker_pools import PoolRequest
from homerun.model import views
from homerun.model.events import DeployEvent, JobEvent, PoolEvent
from homerun.model.images import (
    BuildEvent,
    BuildRequest,
    BuildSummary,
    ImageSummary,
    PushedImage,
)
from homerun.model.inspection import Advice, RampRequest
from homerun.model.jobs import ExecutionOverrides
from homerun.model.scheduler import CallAttempt, SchedulerJobRequest, SchedulerJobView
from homerun.spec import DeployRequest
from homerun.traffic import TrafficUpdate

_REF = "#/components/schemas/{model}"
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 300}
_ANY_JSON: dict[str, Any] = {}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    *,
    path_name: bool = False,
    query: dict[str, dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    streams: bool = False,
    returns: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One operation: 200 with JSON (or NDJSON events), 400 and 404 with {"error": ...}."""
    operation: dict[str, Any] = {"summary": summary}
    parameters = []
    if path_name:
        parameters.append({"name": "name", "in": "path", "required": True, "schema": _NAME})
    for name, schema in (query or {}).items():
        parameters.append({"name": name, "in": "query", "required": False, "schema": schema})
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    ok = (
        {"content": {"application/x-ndjson": {"schema": _ref("DeployEvent")}}}
        if streams
        else _json(returns if returns is not None else _ANY_JSON)
    )
    operation["responses"] = {
        "200": {"description": "done", **ok},
        "400": {"description": "the request is not valid", **_json(_ERROR)},
        "404": {"description": "no such service, revision or secret", **_json(_ERROR)},
    }
    return operation


# What the API answers: the views the control plane returns (model/views.py).
_VIEWS: tuple[type[BaseModel], ...] = (
    views.PlatformStatus,
    views.ServiceSummary,
    views.ServiceDescription,
    views.RevisionSummary,
    views.SecretSummary,
    views.SecretVersionView,
    views.SecretVersionCreated,
    views.IamPolicy,
    views.IdentityToken,
    views.JobSummary,
    views.JobDescription,
    views.ExecutionSummary,
    views.ExecutionDescription,
    Advice,
    views.WorkerPoolSummary,
    views.DomainMappingView,
    BuildSummary,
    ImageSummary,
    BuildRequest,
    PushedImage,
    SchedulerJobView,
    CallAttempt,
)


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=model)}


def _list_of(model: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(model)}


def _view_schemas() -> dict[str, Any]:
    _, document = models_json_schema(
        [(view, "serialization") for view in _VIEWS], ref_template=_REF
    )
    event = TypeAdapter(DeployEvent).json_schema(ref_template=_REF, mode="serialization")
    job_event = TypeAdapter(JobEvent).json_schema(ref_template=_REF, mode="serialization")
    pool_event = TypeAdapter(PoolEvent).json_schema(ref_template=_REF, mode="serialization")
    build_event = TypeAdapter(BuildEvent).json_schema(ref_template=_REF, mode="serialization")
    return {
        **document.get("$defs", {}),
        **event.pop("$defs", {}),
        **job_event.pop("$defs", {}),
        **pool_event.pop("$defs", {}),
        **build_event.pop("$defs", {}),
        "DeployEvent": event,
        "JobEvent": job_event,
        "PoolEvent": pool_event,
        "BuildEvent": build_event,
    }


def openapi_document() -> dict[str, Any]:
    deploy = DeployRequest.model_json_schema(ref_template=_REF)
    traffic = TrafficUpdate.model_json_schema(ref_template=_REF)
    job_request = JobRequest.model_json_schema(ref_template=_REF)
    pool_request = PoolRequest.model_json_schema(ref_template=_REF)
    scheduler_request = SchedulerJobRequest.model_json_schema(ref_template=_REF)
    overrides = ExecutionOverrides.model_json_schema(ref_template=_REF)
    knative_document = {"type": "object", "description": "a Knative document (?format=knative)"}
    components = {
        **_view_schemas(),
        **deploy.pop("$defs", {}),
        **traffic.pop("$defs", {}),
        "DeployRequest": deploy,
        "RampRequest": RampRequest.model_json_schema(ref_template=_REF),
        **job_request.pop("$defs", {}),
        "JobRequest": job_request,
        **pool_request.pop("$defs", {}),
        "PoolRequest": pool_request,
        **scheduler_request.pop("$defs", {}),
        "SchedulerJobRequest": scheduler_request,
        "ExecutionOverrides": overrides,
        "TrafficUpdate": traffic,
        "BindingRequest": {
            "type": "object",
            "properties": {"member": {"type": "string"}, "role": {"type": "string"}},
            "required": ["member", "role"],
        },
        "TokenRequest": {
            "type": "object",
            "properties": {
                "member": {"type": "string"},
                "audience": {"type": ["string", "null"]},
            },
            "required": ["member"],
        },
        "DomainMappingRequest": {
            "type": "object",
            "properties": {
                "domain": {"type": "string"},
                "service": {"type": "string"},
                "force_override": {"type": "boolean"},
            },
            "required": ["domain", "service"],
        },
        "SecretData": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "data": {"type": "string"}},
            "required": ["data"],
        },
    }

    ref = _ref

    knative = {"format": {"type": "string", "enum": ["knative"]}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "homerun admin API",
            "version": "1",
            "description": "JSON over HTTP on HOMERUN_HOME/admin.sock (mode 0600), and on the "
            "optional admin-listen TCP address with `Authorization: Bearer <admin token>`.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"adminToken": []}],
        "paths": {
            "/v1/openapi.json": {"get": _operation("this description")},
            "/v1/status": {"get": _operation("the daemon's status", returns=ref("PlatformStatus"))},
            "/v1/shutdown": {"post": _operation("stop the daemon and its instances")},
            "/v1/services": {
                "get": _operation("list services", returns=_list_of("ServiceSummary"))
            },
            "/v1/services/{name}": {
                "get": _operation(
                    "describe a service",
                    path_name=True,
                    query=knative,
                    returns={"anyOf": [ref("ServiceDescription"), knative_document]},
                ),
                "put": _operation(
                    "apply a Knative Service (`services replace`)",
                    path_name=True,
                    query={"file": {"type": "string"}},
                    body=_ANY_JSON,
                    streams=True,
                ),
                "delete": _operation("delete a service", path_name=True),
            },
            "/v1/services/{name}/advice": {
                "get": _operation(
                    "the concurrency to set and why (`services advise`)",
                    path_name=True,
                    returns=ref("Advice"),
                ),
                "post": _operation(
                    "ramp a private instance, then advise (`services advise --ramp`)",
                    path_name=True,
                    body=ref("RampRequest"),
                    returns=ref("Advice"),
                ),
            },
            "/v1/services/{name}/deploy": {
                "post": _operation(
                    "deploy or update a service",
                    path_name=True,
                    body=ref("DeployRequest"),
                    streams=True,
                )
            },
            "/v1/services/{name}/traffic": {
                "post": _operation(
                    "split traffic and tag revisions",
                    path_name=True,
                    body=ref("TrafficUpdate"),
                    returns=ref("ServiceSummary"),
                )
            },
            "/v1/services/{name}/logs": {
                "get": _operation(
                    "read a service's logs",
                    path_name=True,
                    query={
                        "limit": {"type": "integer", "minimum": 1},
                        "revision": {"type": "string"},
                        "min_severity": {"type": "string"},
                        "since": {"type": "string"},
                        "after": {"type": "string"},
                        "trace": {"type": "string"},
                    },
                )
            },
            "/v1/services/{name}/iam": {
                "get": _operation(
                    "the service's IAM policy", path_name=True, returns=ref("IamPolicy")
                )
            },
            "/v1/services/{name}/iam/add": {
                "post": _operation(
                    "grant roles/run.invoker",
                    path_name=True,
                    body=ref("BindingRequest"),
                    returns=ref("IamPolicy"),
                )
            },
            "/v1/services/{name}/iam/remove": {
                "post": _operation(
                    "revoke roles/run.invoker",
                    path_name=True,
                    body=ref("BindingRequest"),
                    returns=ref("IamPolicy"),
                )
            },
            "/v1/tokens": {
                "post": _operation(
                    "mint an ID token", body=ref("TokenRequest"), returns=ref("IdentityToken")
                )
            },
            "/v1/revisions": {
                "get": _operation(
                    "list revisions",
                    query={"service": {"type": "string"}},
                    returns=_list_of("RevisionSummary"),
                )
            },
            "/v1/revisions/{name}": {
                "get": _operation(
                    "describe a revision",
                    path_name=True,
                    query=knative,
                    returns={"anyOf": [ref("RevisionSummary"), knative_document]},
                ),
                "delete": _operation("delete a revision", path_name=True),
            },
            "/v1/secrets": {
                "get": _operation("list secrets", returns=_list_of("SecretSummary")),
                "post": _operation(
                    "create a secret", body=ref("SecretData"), returns=ref("SecretVersionCreated")
                ),
            },
            "/v1/secrets/{name}": {"delete": _operation("delete a secret", path_name=True)},
            "/v1/secrets/{name}/versions": {
                "get": _operation(
                    "list a secret's versions",
                    path_name=True,
                    returns=_list_of("SecretVersionView"),
                ),
                "post": _operation(
                    "add a version to a secret",
                    path_name=True,
                    body=ref("SecretData"),
                    returns=ref("SecretVersionCreated"),
                ),
            },
            **_job_paths(),
            **_pool_paths(),
            **_domain_mapping_paths(),
            **_scheduler_paths(),
            **_image_paths(),
        },
    }


def _image_paths() -> dict[str, Any]:
    """Builds and the local image store."""
    submit = _operation("build a folder into an image (`builds submit`)", body=_ref("BuildRequest"))
    submit["responses"]["200"] = {
        "description": "its events as they happen, the last `built` or `error`",
        "content": {"application/x-ndjson": {"schema": _ref("BuildEvent")}},
    }
    return {
        "/v1/builds": {
            "get": _operation("list builds, newest first", returns=_list_of("BuildSummary")),
            "post": submit,
        },
        "/v1/images/push": {
            "post": _operation(
                "push an image podman built to its registry (`images push`)",
                body={"type": "object", "properties": {"name": {"type": "string"}}},
                returns=_ref("PushedImage"),
            )
        },
        "/v1/images": {
            "get": _operation("list the local image store", returns=_list_of("ImageSummary")),
            "delete": _operation(
                "delete an image name (NAME[:TAG]) or every name of a digest (NAME@sha256:...)",
                query={"name": {"type": "string"}},
            ),
        },
    }


def _job_paths() -> dict[str, Any]:
    """Jobs and their executions."""
    ref = _ref
    execution = ref("ExecutionDescription")
    deploy = _operation(
        "create or update a job (`jobs create|deploy|update`)",
        path_name=True,
        body=ref("JobRequest"),
    )
    deploy["responses"]["200"] = {
        "description": "its events as they happen, the last `job` or `error`",
        "content": {"application/x-ndjson": {"schema": ref("JobEvent")}},
    }
    return {
        "/v1/jobs": {"get": _operation("list jobs", returns=_list_of("JobSummary"))},
        "/v1/jobs/{name}": {
            "get": _operation("describe a job", path_name=True, returns=ref("JobDescription")),
            "delete": _operation(
                "delete a job, its executions (running ones cancelled) and logs", path_name=True
            ),
        },
        "/v1/jobs/{name}/deploy": {"post": deploy},
        "/v1/jobs/{name}/executions": {
            "get": _operation(
                "list a job's executions", path_name=True, returns=_list_of("ExecutionSummary")
            ),
            "post": _operation(
                "execute a job (`jobs execute`)",
                path_name=True,
                body=ref("ExecutionOverrides"),
                returns=execution,
            ),
        },
        "/v1/jobs/{name}/logs": {
            "get": _operation(
                "read a job's logs: its tasks' output and the platform's events",
                path_name=True,
                query={
                    "limit": {"type": "integer", "minimum": 1},
                    "execution": {"type": "string"},
                    "task": {"type": "integer", "minimum": 0},
                    "after": {"type": "string", "description": "only entries after this time"},
                },
            )
        },
        "/v1/executions": {
            "get": _operation(
                "list executions",
                query={"job": {"type": "string"}},
                returns=_list_of("ExecutionSummary"),
            )
        },
        "/v1/executions/{name}": {
            "get": _operation(
                "describe an execution and its tasks", path_name=True, returns=execution
            ),
            "delete": _operation("delete a finished execution", path_name=True),
        },
        "/v1/executions/{name}/cancel": {
            "post": _operation(
                "cancel a running execution: its tasks stop", path_name=True, returns=execution
            )
        },
    }


def _domain_mapping_paths() -> dict[str, Any]:
    mapping = _ref("DomainMappingView")
    return {
        "/v1/domain-mappings": {
            "get": _operation(
                "list domain mappings (of one service with ?service=)",
                query={"service": {"type": "string"}},
                returns=_list_of("DomainMappingView"),
            ),
            "post": _operation(
                "map a domain to a service (`domain-mappings create`)",
                body=_ref("DomainMappingRequest"),
                returns=mapping,
            ),
        },
        "/v1/domain-mappings/{name}": {
            "get": _operation("describe a domain mapping", path_name=True, returns=mapping),
            "delete": _operation("delete a domain mapping", path_name=True),
        },
    }


def _pool_paths() -> dict[str, Any]:
    """Worker pools."""
    ref = _ref
    pool = ref("WorkerPoolSummary")
    deploy = _operation(
        "create or update a worker pool (`worker-pools deploy`)",
        path_name=True,
        body=ref("PoolRequest"),
    )
    deploy["responses"]["200"] = {
        "description": "its events as they happen, the last `pool` or `error`",
        "content": {"application/x-ndjson": {"schema": ref("PoolEvent")}},
    }
    return {
        "/v1/worker-pools": {
            "get": _operation("list worker pools", returns=_list_of("WorkerPoolSummary"))
        },
        "/v1/worker-pools/{name}": {
            "get": _operation("describe a worker pool", path_name=True, returns=pool),
            "delete": _operation("delete a worker pool: its instances stop", path_name=True),
        },
        "/v1/worker-pools/{name}/deploy": {"post": deploy},
        "/v1/worker-pools/{name}/logs": {
            "get": _operation(
                "read a worker pool's logs: its instances' output and the platform's events",
                path_name=True,
                query={"limit": {"type": "integer", "minimum": 1}},
            )
        },
    }


def _scheduler_paths() -> dict[str, Any]:
    """Scheduler jobs (Cloud Scheduler's HTTP targets)."""
    job = _ref("SchedulerJobView")
    return {
        "/v1/scheduler/jobs": {
            "get": _operation("list scheduler jobs", returns=_list_of("SchedulerJobView")),
            "post": _operation(
                "create a scheduler job (`scheduler jobs create http`)",
                body=_ref("SchedulerJobRequest"),
                returns=job,
            ),
        },
        "/v1/scheduler/jobs/{name}": {
            "get": _operation("describe a scheduler job", path_name=True, returns=job),
            "delete": _operation("delete a scheduler job", path_name=True),
        },
        "/v1/scheduler/jobs/{name}/{action}": {
            "post": {
                **_operation(
                    "pause or resume a scheduler job (the job after it), or run it now (the "
                    "call's CallAttempt)",
                    path_name=True,
                ),
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": _NAME},
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["pause", "resume", "run"]},
                    },
                ],
            }
        },
    }
