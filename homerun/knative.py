"""Knative serving.knative.dev/v1 Service and Revision documents: rendered from homerun's records
for `describe`, and parsed with Knative's validation rules (errors name the field path) for
`homerun services replace`. docs/knative.md lists the fields homerun supports and refuses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from homerun.errors import InvalidSpec
from homerun.scaling.policy import ANNOTATION_PREFIX, check_annotations
from homerun.spec import (
    DEFAULT_STARTUP_TIMEOUT_SECONDS,
    MAX_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    RevisionSpec,
    SecretRef,
    check_cpu,
    check_memory,
    check_secret_version,
    validate_env_name,
    validate_secret_name,
    validate_service_name,
    validation_message,
)
from homerun.traffic import (
    DEFAULT_TRAFFIC,
    ResolvedTarget,
    TrafficEntry,
    check_tag,
    resolve,
    traffic_problems,
)

API_VERSION = "serving.knative.dev/v1"
# A source-built revision's image: its artifact, named by the digest of its content.
IMAGE_REGISTRY = "homerun.local"
# The folder the artifact was built from; used to build again when the digest is unknown here.
SOURCE_ANNOTATION = "homerun.dev/source"
DEFAULT_PORT = 8080  # Knative's and Cloud Run's default containerPort
# Cloud Run's own cap on one startup probe timeout; longer budgets come from periodSeconds.
MAX_PROBE_TIMEOUT = 240
READY, FAILED = "ready", "failed"
_IMAGE = re.compile(
    rf"^{re.escape(IMAGE_REGISTRY)}/(?P<name>[a-z0-9][-a-z0-9._/]*)@sha256:(?P<digest>[0-9a-f]{{64}})$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Knative still accepts the camelCase forms Cloud Run writes; homerun stores the kebab ones.
_ANNOTATION_ALIASES = {
    ANNOTATION_PREFIX + "minScale": ANNOTATION_PREFIX + "min-scale",
    ANNOTATION_PREFIX + "maxScale": ANNOTATION_PREFIX + "max-scale",
}
# Written by Knative itself; a document read back from a cluster may carry them.
_SERVER_ANNOTATIONS = frozenset({"serving.knative.dev/creator", "serving.knative.dev/lastModifier"})
_OUTPUT_ONLY_METADATA = frozenset(
    {
        "namespace",
        "generation",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "selfLink",
        "managedFields",
    }
)


def image_for(service: str, digest: str) -> str:
    return f"{IMAGE_REGISTRY}/{service}@sha256:{digest}"


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- rendering --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionView:
    name: str
    service: str
    spec: RevisionSpec
    status: str  # building | starting | ready | failed
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
    container["image"] = image or f"{IMAGE_REGISTRY}/unbuilt"
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
        container["ports"] = [{"name": "http1", "containerPort": spec.container_port}]
    limits = {key: value for key, value in (("cpu", spec.cpu), ("memory", spec.memory)) if value}
    if limits:
        container["resources"] = {"limits": limits}
    budget = spec.startup_timeout_seconds
    container["startupProbe"] = {
        "tcpSocket": {"port": spec.container_port or DEFAULT_PORT},
        "timeoutSeconds": min(budget, MAX_PROBE_TIMEOUT),
        "periodSeconds": budget,
        "failureThreshold": 1,
    }
    revision_spec: dict[str, Any] = {
        "containerConcurrency": spec.container_concurrency,
        "timeoutSeconds": spec.timeout_seconds,
    }
    if spec.service_account:
        revision_spec["serviceAccountName"] = spec.service_account
    revision_spec["containers"] = [container]
    return {"metadata": metadata, "spec": revision_spec}


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


def render_service(view: ServiceView) -> dict[str, Any]:
    latest_created = view.revisions[0] if view.revisions else None
    latest_ready = next((r for r in view.revisions if r.status == READY), None)
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
    resolved = resolve(view.traffic or DEFAULT_TRAFFIC, latest_ready.name if latest_ready else None)
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": metadata,
        "spec": spec,
        "status": _service_status(view, latest_created, latest_ready, resolved),
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


def _service_status(
    view: ServiceView,
    latest_created: RevisionView | None,
    latest_ready: RevisionView | None,
    resolved: list[ResolvedTarget],
) -> dict[str, Any]:
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
    ready = _worst(configuration, routes)
    status: dict[str, Any] = {
        "observedGeneration": view.generation,
        "conditions": [ready, configuration, routes],
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


# -- parsing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateManifest:
    name: str | None  # Knative's "bring your own revision name"
    spec: RevisionSpec  # source is "" when the document names none
    digest: str | None  # the artifact asked for; None never happens for a valid document
    source: str | None  # the homerun.dev/source annotation


@dataclass(frozen=True)
class ServiceManifest:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    template: TemplateManifest
    traffic: tuple[TrafficEntry, ...]


class _Problems:
    """Every problem of a document, each with its field path, reported at once."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self, where: str) -> None:
        if self.items:
            lines = "\n".join(f"  {path}: {message}" for path, message in self.items)
            count = len(self.items)
            raise InvalidSpec(
                f"{where} is not a valid Knative Service "
                f"({count} problem{'s' if count > 1 else ''}):\n{lines}"
            )


# Fields Knative has that homerun does not run, with the reason given to the user.
_REFUSED_POD_FIELDS = {
    "volumes": "volumes are not supported",
    "imagePullSecrets": "homerun does not pull images",
    "initContainers": "init containers are not supported",
    "responseStartTimeoutSeconds": "not supported; timeoutSeconds bounds the whole request",
    "idleTimeoutSeconds": "not supported; timeoutSeconds bounds the whole request",
    "enableServiceLinks": "not supported",
    "automountServiceAccountToken": "not supported",
    "runtimeClassName": "not supported",
    "nodeSelector": "homerun runs on one machine",
    "affinity": "homerun runs on one machine",
    "tolerations": "homerun runs on one machine",
    "topologySpreadConstraints": "homerun runs on one machine",
    "securityContext": "not supported",
    "hostAliases": "not supported",
    "dnsPolicy": "not supported",
    "dnsConfig": "not supported",
    "priorityClassName": "not supported",
    "schedulerName": "not supported",
    "shareProcessNamespace": "not supported",
}
_REFUSED_CONTAINER_FIELDS = {
    "envFrom": "not supported; list each variable under env",
    "livenessProbe": "not supported: homerun probes an instance only at startup (TCP)",
    "readinessProbe": "not supported: homerun probes an instance only at startup (TCP)",
    "workingDir": "not supported: instances run in the artifact's working directory",
    "volumeMounts": "volumes are not supported",
    "securityContext": "not supported",
    "lifecycle": "not supported",
    "imagePullPolicy": "homerun does not pull images",
    "terminationMessagePath": "not supported",
    "terminationMessagePolicy": "not supported",
    "stdin": "stdin is always /dev/null",
    "stdinOnce": "stdin is always /dev/null",
    "tty": "not supported",
}


def parse_service(document: Any, *, where: str = "the document") -> ServiceManifest:
    """A Knative Service document -> what homerun applies; InvalidSpec lists every problem."""
    problems = _Problems()
    root = _mapping(document, "", problems, required=True)  # `null` is no Service either
    if root is None:
        problems.raise_if_any(where)
        raise AssertionError("unreachable")
    _only(
        root,
        "",
        problems,
        allowed={"apiVersion", "kind", "metadata", "spec", "status"},
    )
    if root.get("apiVersion") != API_VERSION:
        problems.add("apiVersion", f"must be {API_VERSION}, got {root.get('apiVersion')!r}")
    if root.get("kind") != "Service":
        problems.add("kind", f"must be Service, got {root.get('kind')!r}")
    name, labels, annotations = _service_metadata(root.get("metadata"), problems)
    spec = _mapping(root.get("spec"), "spec", problems, required=True) or {}
    _only(spec, "spec", problems, allowed={"template", "traffic"})
    template = _template(spec.get("template"), name, problems)
    traffic = _traffic(spec.get("traffic"), name, problems)
    problems.raise_if_any(where)
    assert template is not None  # no problems means a template was read
    return ServiceManifest(name, labels, annotations, template, traffic)


def _service_metadata(
    raw: Any, problems: _Problems
) -> tuple[str, dict[str, str], dict[str, str]]:
    metadata = _mapping(raw, "metadata", problems, required=True) or {}
    _only(
        metadata,
        "metadata",
        problems,
        allowed={"name", "labels", "annotations", *_OUTPUT_ONLY_METADATA},
        refused={
            "generateName": "give the service a name",
            "ownerReferences": "not supported",
            "finalizers": "not supported",
        },
    )
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        problems.add("metadata.name", "required: the service's name")
        name = ""
    else:
        try:
            validate_service_name(name)
        except InvalidSpec as error:
            problems.add("metadata.name", str(error))
    labels = _string_map(metadata.get("labels"), "metadata.labels", problems)
    annotations = _string_map(metadata.get("annotations"), "metadata.annotations", problems)
    for key in _SERVER_ANNOTATIONS:
        annotations.pop(key, None)
    return name, labels, annotations


def _template(raw: Any, service: str, problems: _Problems) -> TemplateManifest | None:
    path = "spec.template"
    template = _mapping(raw, path, problems, required=True)
    if template is None:
        return None
    _only(template, path, problems, allowed={"metadata", "spec"})
    metadata = _mapping(template.get("metadata"), f"{path}.metadata", problems) or {}
    _only(
        metadata,
        f"{path}.metadata",
        problems,
        allowed={"name", "labels", "annotations", *_OUTPUT_ONLY_METADATA},
    )
    revision_name = metadata.get("name")
    if revision_name is not None:
        revision_name = _revision_name(revision_name, service, f"{path}.metadata.name", problems)
    labels = _string_map(metadata.get("labels"), f"{path}.metadata.labels", problems)
    annotations = _annotations(
        metadata.get("annotations"), f"{path}.metadata.annotations", problems
    )
    source = annotations.pop(SOURCE_ANNOTATION, None)

    spec_path = f"{path}.spec"
    spec = _mapping(template.get("spec"), spec_path, problems, required=True) or {}
    _only(
        spec,
        spec_path,
        problems,
        allowed={"containers", "containerConcurrency", "timeoutSeconds", "serviceAccountName"},
        refused=_REFUSED_POD_FIELDS,
    )
    fields: dict[str, Any] = {
        "source": source or "",
        "labels": labels,
        "annotations": annotations,
    }
    concurrency = spec.get("containerConcurrency")
    if concurrency is not None:
        number = _integer(concurrency, f"{spec_path}.containerConcurrency", problems)
        if number == 0:
            problems.add(
                f"{spec_path}.containerConcurrency",
                f"0 (unlimited) is not supported; give 1..{MAX_CONCURRENCY}",
            )
        elif number is not None and not 1 <= number <= MAX_CONCURRENCY:
            problems.add(
                f"{spec_path}.containerConcurrency", f"must be 1..{MAX_CONCURRENCY}, got {number}"
            )
        elif number is not None:
            fields["container_concurrency"] = number
    timeout = spec.get("timeoutSeconds")
    if timeout is not None:
        number = _integer(timeout, f"{spec_path}.timeoutSeconds", problems)
        if number is not None and not 1 <= number <= MAX_TIMEOUT_SECONDS:
            problems.add(
                f"{spec_path}.timeoutSeconds", f"must be 1..{MAX_TIMEOUT_SECONDS}, got {number}"
            )
        elif number is not None:
            fields["timeout_seconds"] = number
    account = spec.get("serviceAccountName")
    if account is not None:
        fields["service_account"] = _string(account, f"{spec_path}.serviceAccountName", problems)
    digest = None
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.add(f"{spec_path}.containers", "required: a list with one container")
    elif len(containers) > 1:
        problems.add(
            f"{spec_path}.containers", "sidecars are not supported: give exactly one container"
        )
    else:
        digest = _container(containers[0], f"{spec_path}.containers[0]", fields, problems)
    try:
        revision_spec = RevisionSpec.model_validate(fields)
    except ValidationError as error:
        problems.add(spec_path, validation_message(error))
        return None
    return TemplateManifest(revision_name, revision_spec, digest, source)


def _container(
    raw: Any, path: str, fields: dict[str, Any], problems: _Problems
) -> str | None:
    container = _mapping(raw, path, problems)
    if container is None:
        return None
    _only(
        container,
        path,
        problems,
        allowed={"name", "image", "command", "args", "env", "ports", "resources", "startupProbe"},
        refused=_REFUSED_CONTAINER_FIELDS,
    )
    if "name" in container:
        fields["container_name"] = _string(container["name"], f"{path}.name", problems)
    digest = None
    image = container.get("image")
    if not isinstance(image, str) or not image:
        problems.add(f"{path}.image", "required")
    else:
        match = _IMAGE.match(image)
        if match is None:
            problems.add(
                f"{path}.image",
                f"{image!r} is not a homerun artifact: homerun runs images it built from source, "
                f"named {IMAGE_REGISTRY}/SERVICE@sha256:DIGEST as `homerun services describe "
                "--format yaml` prints them (running other images needs a container engine)",
            )
        else:
            digest = match.group("digest")
    for key in ("command", "args"):
        if key in container:
            values = container[key]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                problems.add(f"{path}.{key}", "must be a list of strings")
            else:
                fields[key] = list(values) or None
    env, secrets = _env(container.get("env"), f"{path}.env", problems)
    fields["env"], fields["secrets"] = env, secrets
    port = _ports(container.get("ports"), f"{path}.ports", problems)
    if port is not None:
        fields["container_port"] = port
    _resources(container.get("resources"), f"{path}.resources", fields, problems)
    if "startupProbe" in container:
        budget = _startup_probe(
            container["startupProbe"], f"{path}.startupProbe", port or DEFAULT_PORT, problems
        )
        if budget is not None:
            fields["startup_timeout_seconds"] = budget
    else:
        fields["startup_timeout_seconds"] = DEFAULT_STARTUP_TIMEOUT_SECONDS
    return digest


def _env(
    raw: Any, path: str, problems: _Problems
) -> tuple[dict[str, str], dict[str, SecretRef]]:
    env: dict[str, str] = {}
    secrets: dict[str, SecretRef] = {}
    if raw is None:
        return env, secrets
    if not isinstance(raw, list):
        problems.add(path, "must be a list of {name, value} or {name, valueFrom}")
        return env, secrets
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        variable = _mapping(item, item_path, problems)
        if variable is None:
            continue
        _only(variable, item_path, problems, allowed={"name", "value", "valueFrom"})
        name = variable.get("name")
        if not isinstance(name, str):
            problems.add(f"{item_path}.name", "required")
            continue
        try:
            validate_env_name(name, "env")
        except InvalidSpec as error:
            problems.add(f"{item_path}.name", str(error).split(": ", 1)[-1])
            continue
        if name in env or name in secrets:
            problems.add(f"{item_path}.name", f"{name} is defined twice")
            continue
        if "valueFrom" in variable:
            if "value" in variable:
                problems.add(item_path, "expected exactly one of value, valueFrom")
                continue
            ref = _secret_key_ref(variable["valueFrom"], f"{item_path}.valueFrom", problems)
            if ref is not None:
                secrets[name] = ref
            continue
        value = variable.get("value", "")
        if not isinstance(value, str):
            problems.add(f"{item_path}.value", f"must be a string (quote it), got {value!r}")
            continue
        env[name] = value
    return env, secrets


def _secret_key_ref(raw: Any, path: str, problems: _Problems) -> SecretRef | None:
    value_from = _mapping(raw, path, problems)
    if value_from is None:
        return None
    refused = {
        "configMapKeyRef": "config maps are not supported; use a secret or a value",
        "fieldRef": "not supported",
        "resourceFieldRef": "not supported",
    }
    _only(value_from, path, problems, allowed={"secretKeyRef"}, refused=refused)
    if "secretKeyRef" not in value_from:
        if not set(value_from) & set(refused):
            problems.add(path, "expected secretKeyRef")
        return None
    ref_path = f"{path}.secretKeyRef"
    ref = _mapping(value_from["secretKeyRef"], ref_path, problems)
    if ref is None:
        return None
    _only(ref, ref_path, problems, allowed={"name", "key"}, refused={"optional": "not supported"})
    name, key = ref.get("name"), ref.get("key")
    if not isinstance(name, str):
        problems.add(f"{ref_path}.name", "required: the secret's name")
        return None
    if not isinstance(key, str | int):
        problems.add(f"{ref_path}.key", "required: the secret version (a number or 'latest')")
        return None
    try:
        validate_secret_name(name, f"{ref_path}.name")
        version = check_secret_version(str(key), f"{ref_path}.key")
    except InvalidSpec as error:
        location, _, message = str(error).partition(": ")
        problems.add(location, message)
        return None
    return SecretRef(secret=name, version=version)


def _ports(raw: Any, path: str, problems: _Problems) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > 1:
        problems.add(path, "must be a list of at most one port")
        return None
    if not raw:
        return None
    port_path = f"{path}[0]"
    port = _mapping(raw[0], port_path, problems)
    if port is None:
        return None
    _only(port, port_path, problems, allowed={"name", "containerPort", "protocol"})
    name = port.get("name", "http1")
    if name not in ("http1", ""):
        problems.add(
            f"{port_path}.name",
            f"{name!r} is not supported: homerun speaks HTTP/1.1 to instances (http1)",
        )
    if port.get("protocol", "TCP") != "TCP":
        problems.add(f"{port_path}.protocol", "must be TCP")
    number = _integer(
        port.get("containerPort", DEFAULT_PORT), f"{port_path}.containerPort", problems
    )
    if number is not None and not 1 <= number <= 65535:
        problems.add(f"{port_path}.containerPort", f"must be 1..65535, got {number}")
        return None
    return number


def _resources(raw: Any, path: str, fields: dict[str, Any], problems: _Problems) -> None:
    resources = _mapping(raw, path, problems)
    if resources is None:
        return
    _only(
        resources,
        path,
        problems,
        allowed={"limits"},
        refused={"requests": "homerun records limits only", "claims": "not supported"},
    )
    limits = _mapping(resources.get("limits"), f"{path}.limits", problems) or {}
    _only(limits, f"{path}.limits", problems, allowed={"cpu", "memory"})
    for key, check in (("cpu", check_cpu), ("memory", check_memory)):
        if key in limits:
            value = str(limits[key])
            try:
                fields[key] = check(value, f"{path}.limits.{key}")
            except InvalidSpec as error:
                location, _, message = str(error).partition(": ")
                problems.add(location, message)


def _startup_probe(raw: Any, path: str, port: int, problems: _Problems) -> int | None:
    """The startup budget: initialDelaySeconds + periodSeconds x failureThreshold (Kubernetes'
    defaults 0, 10 and 3), which homerun spends probing $PORT by TCP connect."""
    probe = _mapping(raw, path, problems)
    if probe is None:
        return None
    _only(
        probe,
        path,
        problems,
        allowed={
            "tcpSocket",
            "initialDelaySeconds",
            "periodSeconds",
            "timeoutSeconds",
            "failureThreshold",
            "successThreshold",
        },
        refused={
            "httpGet": "only tcpSocket startup probes are supported (homerun connects to $PORT)",
            "grpc": "only tcpSocket startup probes are supported (homerun connects to $PORT)",
            "exec": "only tcpSocket startup probes are supported (homerun connects to $PORT)",
        },
    )
    if "tcpSocket" in probe:
        socket = _mapping(probe["tcpSocket"], f"{path}.tcpSocket", problems) or {}
        _only(socket, f"{path}.tcpSocket", problems, allowed={"port"})
        if "port" in socket and socket["port"] not in (port, 0):
            problems.add(
                f"{path}.tcpSocket.port",
                f"must be the container port ({port}), got {socket['port']}",
            )
    numbers: dict[str, int | None] = {}
    for key, default, low in (
        ("initialDelaySeconds", 0, 0),
        ("periodSeconds", 10, 1),
        ("timeoutSeconds", 1, 1),
        ("failureThreshold", 3, 1),
        ("successThreshold", 1, 1),
    ):
        value = _integer(probe.get(key, default), f"{path}.{key}", problems)
        if value is not None and value < low:
            problems.add(f"{path}.{key}", f"must be at least {low}, got {value}")
            value = None
        numbers[key] = value
    if numbers["successThreshold"] not in (1, None):
        problems.add(f"{path}.successThreshold", "must be 1")
    delay, period, failures = (
        numbers["initialDelaySeconds"],
        numbers["periodSeconds"],
        numbers["failureThreshold"],
    )
    if delay is None or period is None or failures is None or None in numbers.values():
        return None
    budget = delay + period * failures
    if not 1 <= budget <= 3600:
        problems.add(
            path,
            f"initialDelaySeconds + periodSeconds x failureThreshold must be 1..3600 s, "
            f"got {budget}",
        )
        return None
    return budget


def _traffic(raw: Any, service: str, problems: _Problems) -> tuple[TrafficEntry, ...]:
    path = "spec.traffic"
    if raw is None:
        return DEFAULT_TRAFFIC
    if not isinstance(raw, list) or not raw:
        problems.add(path, "must be a list of traffic targets")
        return ()
    entries: list[TrafficEntry] = []
    valid = True
    for index, item in enumerate(raw):
        item_path = f"{path}[{index}]"
        target = _mapping(item, item_path, problems)
        if target is None:
            valid = False
            continue
        _only(
            target,
            item_path,
            problems,
            allowed={"revisionName", "latestRevision", "percent", "tag"},
            refused={
                "configurationName": "not allowed in a Service: its configuration is implied",
                "url": "output only: status.traffic shows the URL of a tag",
            },
        )
        revision = target.get("revisionName")
        if revision is not None and (not isinstance(revision, str) or not revision):
            problems.add(f"{item_path}.revisionName", "must be a revision name")
            revision = None
        latest_raw = target.get("latestRevision")
        if latest_raw is None:
            latest = revision is None  # Knative's default
        elif not isinstance(latest_raw, bool):
            problems.add(f"{item_path}.latestRevision", "must be true or false")
            latest = revision is None
        else:
            latest = latest_raw
            if (revision is not None) == latest:
                problems.add(
                    f"{item_path}.latestRevision",
                    f'may not set revisionName "{revision or ""}" when latestRevision is '
                    f"{str(latest).lower()}",
                )
                valid = False
        percent = _integer(target.get("percent", 0), f"{item_path}.percent", problems)
        if percent is None:
            valid = False
            percent = 0
        tag = target.get("tag")
        if tag is not None:
            if not isinstance(tag, str):
                problems.add(f"{item_path}.tag", "must be a string")
                tag = None
            else:
                try:
                    check_tag(tag, service or "x")
                except InvalidSpec as error:
                    problems.add(f"{item_path}.tag", str(error).split(": ", 1)[-1])
        pinned = None if latest else revision
        entries.append(TrafficEntry(percent=percent, revision=pinned, latest=latest, tag=tag))
    for where, message in traffic_problems(entries):
        if valid or where:  # the sum means little while a target could not be read
            problems.add(f"{path}{where}", message)
    return tuple(entries)


def _revision_name(raw: Any, service: str, path: str, problems: _Problems) -> str | None:
    if not isinstance(raw, str) or not _DNS_LABEL.match(raw) or len(raw) > 63:
        problems.add(path, f"{raw!r} is not a DNS label (lowercase letters, digits and '-')")
        return None
    if service and not raw.startswith(f"{service}-"):
        problems.add(path, f'"{raw}" must have prefix "{service}-"')
        return None
    return raw


def _annotations(raw: Any, path: str, problems: _Problems) -> dict[str, str]:
    annotations = {}
    for key, value in _string_map(raw, path, problems).items():
        key = _ANNOTATION_ALIASES.get(key, key)
        if key in annotations:
            problems.add(f"{path}.{key}", "given twice (camelCase and kebab-case)")
            continue
        try:
            check_annotations({key: value})
        except InvalidSpec as error:
            message = str(error)
            prefix = f"annotation {key}: "
            problems.add(
                f"{path}.{key}", message[len(prefix) :] if message.startswith(prefix) else message
            )
            continue
        annotations[key] = value
    try:
        check_annotations(annotations)
    except InvalidSpec as error:
        problems.add(f"{path}.{ANNOTATION_PREFIX}min-scale", str(error))
    return annotations


def _mapping(
    raw: Any, path: str, problems: _Problems, required: bool = False
) -> dict[str, Any] | None:
    if raw is None:
        if required:
            problems.add(path or "(document)", "required")
        return None
    if not isinstance(raw, dict):
        problems.add(path or "(document)", f"must be a mapping, got {type(raw).__name__}")
        return None
    return raw


def _only(
    mapping: Mapping[str, Any],
    path: str,
    problems: _Problems,
    *,
    allowed: Iterable[str],
    refused: Mapping[str, str] | None = None,
) -> None:
    allowed = set(allowed)
    for key in mapping:
        if key in allowed:
            continue
        where = f"{path}.{key}" if path else str(key)
        if refused and key in refused:
            problems.add(where, refused[key])
        else:
            problems.add(where, "unknown field")


def _string_map(raw: Any, path: str, problems: _Problems) -> dict[str, str]:
    mapping = _mapping(raw, path, problems)
    if mapping is None:
        return {}
    result = {}
    for key, value in mapping.items():
        if not isinstance(value, str):
            problems.add(f"{path}.{key}", f"must be a string (quote it), got {value!r}")
            continue
        result[str(key)] = value
    return result


def _string(raw: Any, path: str, problems: _Problems) -> str | None:
    if not isinstance(raw, str):
        problems.add(path, "must be a string")
        return None
    return raw


def _integer(raw: Any, path: str, problems: _Problems) -> int | None:
    if isinstance(raw, bool) or not isinstance(raw, int):
        problems.add(path, f"must be a whole number, got {raw!r}")
        return None
    return raw
