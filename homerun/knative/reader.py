"""`homerun services replace FILE`: a Knative Service document -> what homerun applies, or one
InvalidSpec that lists every problem of the document at its field path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from homerun.errors import InvalidSpec
from homerun.knative.models import (
    DEFAULT_PORT,
    IMAGE_REGISTRY,
    SOURCE_ANNOTATION,
    Container,
    ServiceDocument,
    Template,
    Volume,
    VolumeMount,
    level_at,
)
from homerun.knative.probes import ContainerProbe, LivenessProbe, ReadinessProbe, StartupProbe
from homerun.knative.security import PodSecurityContext, SecurityContext
from homerun.model.probes import Probe, ProbeKind
from homerun.model.validation import Problem, field_path, problems, validation_message
from homerun.spec import DEFAULT_STARTUP_TIMEOUT_SECONDS, MemoryVolume, RevisionSpec, SecretRef
from homerun.traffic import DEFAULT_TRAFFIC, TrafficEntry


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


def parse_service(document: Any, *, where: str = "the document") -> ServiceManifest:
    """A Knative Service document -> what homerun applies; InvalidSpec lists every problem."""
    try:
        service = ServiceDocument.model_validate(
            document, context={"service": _name_as_written(document)}
        )
    except ValidationError as error:
        raise _invalid(where, [_explained(problem) for problem in problems(error)]) from None
    template = service.spec.template
    try:
        spec = RevisionSpec.model_validate(_revision_fields(template))
    except ValidationError as error:  # the models check more than RevisionSpec does
        raise _invalid(
            where, [Problem(("spec", "template", "spec"), validation_message(error))]
        ) from None
    metadata = service.metadata
    traffic = service.spec.traffic
    template_annotations = template.metadata.annotations if template.metadata else None
    return ServiceManifest(
        name=metadata.name,
        labels=dict(metadata.labels or {}),
        annotations=dict(metadata.annotations or {}),
        template=TemplateManifest(
            name=template.metadata.name if template.metadata else None,
            spec=spec,
            digest=template.spec.containers[0].digest,
            source=(template_annotations or {}).get(SOURCE_ANNOTATION),
        ),
        traffic=DEFAULT_TRAFFIC if traffic is None else tuple(t.entry() for t in traffic),
    )


def _revision_fields(template: Template) -> dict[str, Any]:
    """RevisionSpec's fields from a template that passed the models' checks."""
    metadata = template.metadata
    annotations = dict(metadata.annotations or {}) if metadata else {}
    source = annotations.pop(SOURCE_ANNOTATION, None)
    spec = template.spec
    container = spec.containers[0]
    env: dict[str, str] = {}
    secrets: dict[str, SecretRef] = {}
    for variable in container.env or []:
        ref = variable.value_from.secret_key_ref if variable.value_from else None
        if ref is not None:
            secrets[variable.name] = SecretRef(secret=ref.name, version=ref.key)
        else:
            env[variable.name] = variable.value or ""
    limits = container.resources.limits if container.resources else None
    requests = container.resources.requests if container.resources else None
    probe = container.startup_probe
    security = container.security_context
    fields: dict[str, Any] = {
        "source": source or "",
        # An image of the local store (`deploy --image`) keeps its name; an artifact named
        # after its service is the source build itself.
        "image": None if container.image.startswith(f"{IMAGE_REGISTRY}/") else container.image,
        "labels": dict(metadata.labels or {}) if metadata else {},
        "annotations": annotations,
        "command": container.command or None,
        "args": container.args or None,
        "env": env,
        "secrets": secrets,
        "startup_timeout_seconds": probe.budget if probe else DEFAULT_STARTUP_TIMEOUT_SECONDS,
        "cpu": limits.cpu if limits else None,
        "memory": limits.memory if limits else None,
        "cpu_request": requests.cpu if requests else None,
        "memory_request": requests.memory if requests else None,
        "working_dir": container.working_dir,
        # A TCP startup probe is the default one: its budget is all it changes.
        "startup_probe": probe.probe() if probe and (probe.http_get or probe.exec) else None,
        "readiness_probe": (
            container.readiness_probe.probe() if container.readiness_probe else None
        ),
        "liveness_probe": container.liveness_probe.probe() if container.liveness_probe else None,
        "container_port": container.port if _port_given(container) else None,
        "use_http2": container.h2c,
        "container_name": container.name,
        **volume_fields(spec.volumes or [], container.volume_mounts or []),
        "run_as_user": security.run_as_user if security else None,
        "run_as_group": security.run_as_group if security else None,
        "run_as_non_root": security.run_as_non_root if security else None,
        **_privileges(security, spec.security_context),
        "service_account": spec.service_account_name,
    }
    if spec.container_concurrency is not None:
        fields["container_concurrency"] = spec.container_concurrency
    if spec.timeout_seconds is not None:
        fields["timeout_seconds"] = spec.timeout_seconds
    return fields


_PROBES: dict[ProbeKind, tuple[str, type[ContainerProbe]]] = {
    ProbeKind.STARTUP: ("startupProbe", StartupProbe),
    ProbeKind.READINESS: ("readinessProbe", ReadinessProbe),
    ProbeKind.LIVENESS: ("livenessProbe", LivenessProbe),
}


def parse_probe(fields: dict[str, Any], kind: ProbeKind, where: str) -> Probe:
    """A probe given as the container spec's fields (gcloud's --liveness-probe KEY=VALUE list,
    nested at the dots), read with the YAML's rules; InvalidSpec names each problem's key."""
    name, model = _PROBES[kind]
    base = ("spec", "template", "spec", "containers", 0, name)
    try:
        probe = model.model_validate(fields)
    except ValidationError as error:
        found = [
            _explained(Problem((*base, *problem.location), problem.message, problem.kind))
            for problem in problems(error)
        ]
        raise InvalidSpec(
            f"{where}: "
            + "; ".join(
                f"{field_path(problem.location[len(base) :]) or name}: {problem.message}"
                for problem in found
            )
        ) from None
    if probe.port not in (None, 0, DEFAULT_PORT):
        raise InvalidSpec(
            f"{where}: the port must be the container port ({DEFAULT_PORT}): a probe goes to "
            f"the instance's $PORT, got {probe.port}"
        )
    return probe.probe()


def _name_as_written(document: Any) -> str:
    """metadata.name, for the checks that depend on it (a revision name's prefix, a tag's
    length), which run while metadata.name itself is being checked."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _explained(problem: Problem) -> Problem:
    """An unknown field with why homerun refuses it or the field probably meant; a required
    one with what it holds."""
    *parent, last = problem.location or ("",)
    level = level_at(parent)
    if level is None or not problem.location:
        return problem
    if problem.kind in ("extra_forbidden", "invalid_key"):
        key = str(last)  # YAML may give a key that is a number
        return Problem((*parent, key), level.unknown_field(key), problem.kind)
    field = level.field_named(last)
    if problem.message == "required" and field is not None and field.description:
        return Problem(problem.location, f"required: {field.description}", problem.kind)
    return problem


def _invalid(where: str, found: list[Problem]) -> InvalidSpec:
    lines = "\n".join(f"  {problem.path or '(document)'}: {problem.message}" for problem in found)
    count = len(found)
    return InvalidSpec(
        f"{where} is not a valid Knative Service "
        f"({count} problem{'s' if count > 1 else ''}):\n{lines}"
    )


def _port_given(container: Container) -> bool:
    """Whether the YAML gave a containerPort (`ports: [{name: h2c}]` names a protocol alone)."""
    ports = container.ports
    return bool(ports) and ports is not None and "container_port" in ports[0].model_fields_set


def volume_fields(volumes: Sequence[Volume], mounts: Sequence[VolumeMount]) -> dict[str, Any]:
    """RevisionSpec's secret_files, volumes and volume_mounts from a template's volumes and its
    container's volumeMounts (checked: each mount names a volume)."""
    by_name = {volume.name: volume for volume in volumes}
    secret_files: dict[str, SecretRef] = {}
    memory: dict[str, MemoryVolume] = {}
    volume_mounts: dict[str, str] = {}
    for volume in volumes:
        if volume.empty_dir is not None:
            memory[volume.name] = MemoryVolume(size_limit=volume.empty_dir.size_limit)
    for mount in mounts:
        volume = by_name[mount.name]
        if volume.secret is not None:
            for name, version in volume.secret.files():
                secret_files[f"{mount.mount_path}/{name}"] = SecretRef(
                    secret=volume.secret.secret_name, version=version
                )
        else:
            volume_mounts[mount.mount_path] = mount.name
    return {"secret_files": secret_files, "volumes": memory, "volume_mounts": volume_mounts}


def _privileges(
    container: SecurityContext | None, pod: PodSecurityContext | None
) -> dict[str, Any]:
    """RevisionSpec's privilege fields from the container's securityContext; its seccomp
    profile from the pod's when the container gives none (as Kubernetes)."""
    capabilities = container.capabilities if container else None
    seccomp = (container.seccomp_profile if container else None) or (
        pod.seccomp_profile if pod else None
    )
    return {
        "allow_privilege_escalation": container.allow_privilege_escalation if container else None,
        "read_only_root_filesystem": container.read_only_root_filesystem if container else None,
        "capabilities_drop": list(capabilities.drop or []) if capabilities else [],
        "capabilities_add": list(capabilities.add or []) if capabilities else [],
        "seccomp_profile": seccomp.type if seccomp else None,
    }
