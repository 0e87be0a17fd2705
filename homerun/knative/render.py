"""Knative serving.knative.dev/v1 Service and Revision documents rendered from homerun's
records, for `describe --format yaml|json`; reader.py reads them back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from homerun.knative.models import (
    API_VERSION,
    DEFAULT_PORT,
    IMAGE_REGISTRY,
    SOURCE_ANNOTATION,
    image_for,
)
from homerun.model.probes import Probe, ProbeAction
from homerun.model.states import RevisionStatus
from homerun.model.views import Readiness
from homerun.spec import RevisionSpec, SecretRef
from homerun.traffic import DEFAULT_TRAFFIC, ResolvedTarget, TrafficEntry, resolve

# Cloud Run's own cap on one startup probe timeout; longer budgets come from periodSeconds.
MAX_PROBE_TIMEOUT = 240
READY, FAILED = RevisionStatus.READY, RevisionStatus.FAILED


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RevisionView:
    name: str
    service: str
    spec: RevisionSpec
    status: RevisionStatus
    message: str
    created_at: float
    ready_at: float | None
    digest: str | None


@dataclass(frozen=True)
class ServiceView:
    name: str
    created_at: float
    generation: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    traffic: tuple[TrafficEntry, ...]
    revisions: list[RevisionView]  # newest first
    url: str
    tag_urls: Mapping[str, str] = field(default_factory=dict)  # tag -> URL


def render_template(spec: RevisionSpec, image: str | None) -> dict[str, Any]:
    """spec.template of a Service (and spec of a Revision) for a revision's spec."""
    annotations = dict(spec.annotations)
    if spec.source:
        annotations[SOURCE_ANNOTATION] = spec.source
    metadata: dict[str, Any] = {}
    if spec.labels:
        metadata["labels"] = dict(sorted(spec.labels.items()))
    if annotations:
        metadata["annotations"] = dict(sorted(annotations.items()))
    container: dict[str, Any] = {}
    if spec.container_name:
        container["name"] = spec.container_name
    container["image"] = spec.image or image or f"{IMAGE_REGISTRY}/unbuilt"
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in spec.env.items()]
    env.extend(
        {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.secret, "key": ref.version}}}
        for name, ref in spec.secrets.items()
    )
    if env:
        container["env"] = env
    if spec.container_port is not None:
        name = "h2c" if spec.use_http2 else "http1"
        container["ports"] = [{"name": name, "containerPort": spec.container_port}]
    elif spec.use_http2:
        container["ports"] = [{"name": "h2c"}]  # the port stays Knative's default
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    security = {
        key: value
        for key, value in (
            ("runAsUser", spec.run_as_user),
            ("runAsGroup", spec.run_as_group),
            ("runAsNonRoot", spec.run_as_non_root),
            ("allowPrivilegeEscalation", spec.allow_privilege_escalation),
            ("readOnlyRootFilesystem", spec.read_only_root_filesystem),
            ("capabilities", _capabilities(spec)),
            ("seccompProfile", {"type": spec.seccomp_profile} if spec.seccomp_profile else None),
        )
        if value is not None
    }
    if security:
        container["securityContext"] = security
    resources: dict[str, Any] = {}
    limits = {key: value for key, value in (("cpu", spec.cpu), ("memory", spec.memory)) if value}
    if limits:
        resources["limits"] = limits
    requests = {
        key: value
        for key, value in (("cpu", spec.cpu_request), ("memory", spec.memory_request))
        if value
    }
    if requests:
        resources["requests"] = requests
    if resources:
        container["resources"] = resources
    port = spec.container_port or DEFAULT_PORT
    budget = spec.startup_timeout_seconds
    if spec.startup_probe is not None and spec.startup_probe.budget == budget:
        container["startupProbe"] = render_probe(spec.startup_probe, port)
    else:
        container["startupProbe"] = {
            "tcpSocket": {"port": port},
            "timeoutSeconds": min(budget, MAX_PROBE_TIMEOUT),
            "periodSeconds": budget,
            "failureThreshold": 1,
        }
    if spec.readiness_probe is not None:
        container["readinessProbe"] = render_probe(spec.readiness_probe, port)
    if spec.liveness_probe is not None:
        container["livenessProbe"] = render_probe(spec.liveness_probe, port)
    revision_spec: dict[str, Any] = {
        "containerConcurrency": spec.container_concurrency,
        "timeoutSeconds": spec.timeout_seconds,
    }
    if spec.service_account:
        revision_spec["serviceAccountName"] = spec.service_account
    volumes, mounts = render_volumes(spec)
    if mounts:
        container["volumeMounts"] = mounts
    revision_spec["containers"] = [container]
    if volumes:
        revision_spec["volumes"] = volumes
    return {"metadata": metadata, "spec": revision_spec}


def render_volumes(spec: RevisionSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) as Cloud Run writes them: each folder of secret files a secret
    volume whose items are its files (key: the version, path: the file's name), each in-memory
    volume an emptyDir of medium Memory."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    taken = set(spec.volumes)
    folders: dict[str, list[tuple[str, SecretRef]]] = {}
    for path, ref in sorted(spec.secret_files.items()):
        folder, _, name = path.rpartition("/")
        folders.setdefault(folder, []).append((name, ref))
    number = 0
    for folder, files in folders.items():
        number += 1
        while f"secret-{number}" in taken:
            number += 1
        volume = f"secret-{number}"
        volumes.append(
            {
                "name": volume,
                "secret": {
                    "secretName": files[0][1].secret,
                    "items": [{"key": ref.version, "path": name} for name, ref in files],
                },
            }
        )
        mounts.append({"name": volume, "mountPath": folder, "readOnly": True})
    for name, memory in sorted(spec.volumes.items()):
        empty_dir: dict[str, Any] = {"medium": "Memory"}
        if memory.size_limit:
            empty_dir["sizeLimit"] = memory.size_limit
        volumes.append({"name": name, "emptyDir": empty_dir})
    mounts.extend(
        {"name": name, "mountPath": path} for path, name in sorted(spec.volume_mounts.items())
    )
    return volumes, mounts


def render_probe(probe: Probe, port: int) -> dict[str, Any]:
    """A probe as the container spec writes it, every field given (so it reads back equal)."""
    rendered: dict[str, Any] = {}
    if probe.action is ProbeAction.HTTP:
        http_get: dict[str, Any] = {"path": probe.path, "port": port}
        if probe.headers:
            http_get["httpHeaders"] = [
                {"name": name, "value": value} for name, value in probe.headers
            ]
        rendered["httpGet"] = http_get
    elif probe.action is ProbeAction.EXEC:
        rendered["exec"] = {"command": list(probe.command)}
    elif probe.action is ProbeAction.GRPC:
        rendered["grpc"] = {"port": port, **({"service": probe.service} if probe.service else {})}
    else:
        rendered["tcpSocket"] = {"port": port}
    rendered.update(
        initialDelaySeconds=probe.initial_delay_seconds,
        periodSeconds=probe.period_seconds,
        timeoutSeconds=probe.timeout_seconds,
        successThreshold=probe.success_threshold,
        failureThreshold=probe.failure_threshold,
    )
    return rendered


def render_traffic_entry(entry: TrafficEntry) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    if entry.tag:
        rendered["tag"] = entry.tag
    if not entry.latest:
        rendered["revisionName"] = entry.revision
    rendered["latestRevision"] = entry.latest
    if entry.percent:
        rendered["percent"] = entry.percent
    return rendered


def ready_condition(view: ServiceView) -> Readiness:
    """The Service's Ready condition, as render_service gives it (no digest or spec needed:
    the control plane's summaries take it from here)."""
    ready = _service_conditions(view, *_latest(view))[0]
    return Readiness(
        status=ready["status"], reason=ready.get("reason"), message=ready.get("message")
    )


def _latest(view: ServiceView) -> tuple[RevisionView | None, RevisionView | None]:
    latest_created = view.revisions[0] if view.revisions else None
    latest_ready = next((r for r in view.revisions if r.status == READY), None)
    return latest_created, latest_ready


def render_service(view: ServiceView) -> dict[str, Any]:
    latest_created, latest_ready = _latest(view)
    metadata: dict[str, Any] = {
        "name": view.name,
        "namespace": "default",
        "generation": view.generation,
        "creationTimestamp": timestamp(view.created_at),
    }
    if view.labels:
        metadata["labels"] = dict(sorted(view.labels.items()))
    if view.annotations:
        metadata["annotations"] = dict(sorted(view.annotations.items()))
    spec: dict[str, Any] = {}
    if latest_created is not None:
        spec["template"] = render_template(
            latest_created.spec,
            image_for(view.name, latest_created.digest) if latest_created.digest else None,
        )
    spec["traffic"] = [render_traffic_entry(entry) for entry in view.traffic or DEFAULT_TRAFFIC]
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": metadata,
        "spec": spec,
        "status": _service_status(view, latest_created, latest_ready),
    }


def render_revision(view: RevisionView, routed: bool, image: str | None) -> dict[str, Any]:
    template = render_template(view.spec, image)
    labels = {
        "serving.knative.dev/configuration": view.service,
        "serving.knative.dev/service": view.service,
        **template["metadata"].get("labels", {}),
    }
    if routed:
        labels["serving.knative.dev/route"] = view.service
    metadata: dict[str, Any] = {
        "name": view.name,
        "namespace": "default",
        "generation": 1,
        "creationTimestamp": timestamp(view.created_at),
        "labels": dict(sorted(labels.items())),
    }
    if template["metadata"].get("annotations"):
        metadata["annotations"] = template["metadata"]["annotations"]
    ready = _revision_condition(view)
    active = (
        _condition("Active", "True", view.ready_at or view.created_at)
        if routed
        else _condition(
            "Active",
            "False",
            view.ready_at or view.created_at,
            "NoTraffic",
            "The target is not receiving traffic.",
        )
    )
    status: dict[str, Any] = {"observedGeneration": 1, "conditions": [active, ready]}
    if image:
        status["imageDigest"] = image
    return {
        "apiVersion": API_VERSION,
        "kind": "Revision",
        "metadata": metadata,
        "spec": template["spec"],
        "status": status,
    }


def _service_conditions(
    view: ServiceView, latest_created: RevisionView | None, latest_ready: RevisionView | None
) -> list[dict[str, Any]]:
    """Ready, ConfigurationsReady and RoutesReady."""
    since = view.created_at
    if latest_created is None:
        configuration = _condition("ConfigurationsReady", "Unknown", since, "Deploying")
    else:
        revision_condition = _revision_condition(latest_created)
        configuration = dict(revision_condition, type="ConfigurationsReady")
        if revision_condition["status"] == "False":
            configuration["message"] = (
                f'Revision "{latest_created.name}" failed with message: '
                f"{revision_condition.get('message', '')}"
            )
    statuses = {revision.name: revision.status for revision in view.revisions}
    resolved = _resolved(view, latest_ready)
    missing = [target for target in resolved if statuses.get(target.revision or "") != READY]
    route_since = latest_ready.ready_at or latest_ready.created_at if latest_ready else since
    if missing:
        names = ", ".join(target.revision or "LATEST" for target in missing)
        routes = _condition(
            "RoutesReady",
            "False",
            route_since,
            "RevisionMissing",
            f"Revision(s) {names} referenced in traffic are not ready.",
        )
    else:
        routes = _condition("RoutesReady", "True", route_since)
    return [_worst(configuration, routes), configuration, routes]


def _resolved(view: ServiceView, latest_ready: RevisionView | None) -> list[ResolvedTarget]:
    return resolve(view.traffic or DEFAULT_TRAFFIC, latest_ready.name if latest_ready else None)


def _service_status(
    view: ServiceView, latest_created: RevisionView | None, latest_ready: RevisionView | None
) -> dict[str, Any]:
    resolved = _resolved(view, latest_ready)
    status: dict[str, Any] = {
        "observedGeneration": view.generation,
        "conditions": _service_conditions(view, latest_created, latest_ready),
    }
    if latest_ready is not None:
        status["latestReadyRevisionName"] = latest_ready.name
    if latest_created is not None:
        status["latestCreatedRevisionName"] = latest_created.name
    status["url"] = view.url
    status["address"] = {"url": view.url}
    traffic = []
    for target in resolved:
        entry: dict[str, Any] = {}
        if target.tag:
            entry["tag"] = target.tag
        if target.revision:
            entry["revisionName"] = target.revision
        entry["latestRevision"] = target.latest
        if target.percent:
            entry["percent"] = target.percent
        if target.tag and target.tag in view.tag_urls:
            entry["url"] = view.tag_urls[target.tag]
        traffic.append(entry)
    status["traffic"] = traffic
    return status


def _revision_condition(view: RevisionView) -> dict[str, Any]:
    if view.status == READY:
        return _condition("Ready", "True", view.ready_at or view.created_at)
    if view.status == FAILED:
        first_line = view.message.strip().splitlines()[0] if view.message.strip() else "failed"
        return _condition("Ready", "False", view.created_at, "RevisionFailed", first_line)
    return _condition("Ready", "Unknown", view.created_at, "Deploying")


def _condition(
    kind: str, status: str, since: float, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastTransitionTime": timestamp(since),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def _worst(*conditions: dict[str, Any]) -> dict[str, Any]:
    for status in ("False", "Unknown"):
        for condition in conditions:
            if condition["status"] == status:
                return dict(condition, type="Ready")
    latest = max(conditions, key=lambda condition: condition["lastTransitionTime"])
    return _condition("Ready", "True", 0) | {"lastTransitionTime": latest["lastTransitionTime"]}


def _capabilities(spec: RevisionSpec) -> dict[str, list[str]] | None:
    given = {
        key: list(names)
        for key, names in (("add", spec.capabilities_add), ("drop", spec.capabilities_drop))
        if names
    }
    return given or None
