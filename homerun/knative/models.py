"""The serving.knative.dev/v1 Service homerun reads, one pydantic model per level of the
document: its fields (camelCase, no coercion: YAML's "5" is no number), the Knative fields
homerun refuses and why, the output-only ones it ignores. Every check raises at its field, so
pydantic's error location is the field path the user sees."""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from homerun.errors import InvalidSpec
from homerun.knative._level import KnativeModel, within
from homerun.knative.probes import (
    LivenessProbe,
    ReadinessProbe,
    StartupProbe,
)
from homerun.knative.security import PodSecurityContext, SecurityContext
from homerun.model.annotations import CAMEL_CASE_ALIASES, annotation_problems
from homerun.model.images import InvalidImageName, parse_image_name
from homerun.model.validation import Location, errors_at
from homerun.model.volumes import check_mount_points, mount_path
from homerun.spec import (
    MAX_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    CpuAmount,
    EnvName,
    MemoryAmount,
    SecretName,
    ServiceName,
    secret_version,
)
from homerun.traffic import TrafficEntry, check_tag, traffic_problems

API_VERSION = "serving.knative.dev/v1"
# A source-built revision's image: its artifact, named by the digest of its content.
IMAGE_REGISTRY = "homerun.local"
# The folder the artifact was built from; used to build again when the digest is unknown here.
SOURCE_ANNOTATION = "homerun.dev/source"
DEFAULT_PORT = 8080  # Knative's and Cloud Run's default containerPort

_IMAGE = re.compile(
    rf"^{re.escape(IMAGE_REGISTRY)}/(?P<name>[a-z0-9][-a-z0-9._/]*)@sha256:(?P<digest>[0-9a-f]{{64}})$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
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
_ONE_MACHINE = "homerun runs on one machine"
_WHOLE_REQUEST = "not supported; timeoutSeconds bounds the whole request"
_NO_STDIN = "stdin is always /dev/null"


def _no_service_links(enabled: bool) -> bool:
    if enabled:
        raise ValueError(
            "not supported: homerun gives an instance no variables for other services (a "
            "service reaches another by its URL); write false, Knative's default, or remove it"
        )
    return enabled


def image_for(service: str, digest: str) -> str:
    return f"{IMAGE_REGISTRY}/{service}@sha256:{digest}"


def level_at(
    location: Sequence[int | str], document: type[KnativeModel] | None = None
) -> type[KnativeModel] | None:
    """The model that reads the mapping at `location` in a Service document (or another
    `document` model), if one does."""
    annotation: Any = document or ServiceDocument
    for part in location:
        annotation = _unwrapped(annotation)
        if isinstance(annotation, type) and issubclass(annotation, KnativeModel):
            field = annotation.field_named(part)
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]  # the item of a list, the value of a dict
        else:
            return None
    annotation = _unwrapped(annotation)
    if isinstance(annotation, type) and issubclass(annotation, KnativeModel):
        return annotation
    return None


def _unwrapped(annotation: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        else:
            return annotation


def _string_keys(value: Any) -> Any:
    # YAML reads `1: x` with an integer key; Kubernetes' maps are keyed by strings.
    return {str(key): item for key, item in value.items()} if isinstance(value, dict) else value


def _number_as_text(value: Any) -> Any:
    # `cpu: 1` and `key: 2` are numbers in YAML; Kubernetes reads them as the strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _zero_is_not_given(value: Any) -> Any:
    # Cloud Run's API: "If not specified or 0, defaults to 80"; a Knative cluster writes its
    # own default, 0, into every Service it stores (there: unlimited, which homerun does not
    # do). Either way the document asks for no number, and gets homerun's default.
    if isinstance(value, int) and not isinstance(value, bool) and value == 0:
        return None
    return value


def _artifact_image(image: str) -> str:
    if not image:
        raise ValueError("required")
    if _IMAGE.match(image) is not None:
        return image
    try:
        pinned = parse_image_name(image).digest is not None
    except InvalidImageName:
        pinned = False
    if not pinned:
        raise ValueError(
            f"{image!r} is not an image pinned to its digest: homerun runs images it built, "
            f"named {IMAGE_REGISTRY}/SERVICE@sha256:DIGEST or NAME@sha256:DIGEST as `homerun "
            "services describe --format yaml` prints them"
        )
    return image


def _absolute_path(path: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"must be an absolute path in the image, got {path!r}")
    if ".." in path.split("/"):
        raise ValueError(f"may not contain '..', got {path!r}")
    return path


def _file_name(path: str) -> str:
    if not path or "/" in path or path in (".", "..") or "\0" in path:
        raise ValueError(f"must be a file name (no '/'), got {path!r}")
    return path


def _volume_name(name: str) -> str:
    if not _DNS_LABEL.match(name) or len(name) > 63:
        raise ValueError(
            f"{name!r} is not a volume name: at most 63 lowercase letters, digits and hyphens"
        )
    return name


def _version_as_key(key: str) -> str:
    """Cloud Run reads a secretKeyRef's key as the secret's version, and so does homerun."""
    try:
        return secret_version(key)
    except ValueError as error:
        raise ValueError(
            f"{error}: the key is the secret's version, as on Cloud Run (homerun's secrets have "
            "versions, not named keys: keep one secret per value)"
        ) from None


def _without_server_annotations(annotations: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in annotations.items() if key not in _SERVER_ANNOTATIONS}


def _scaling_annotations(annotations: dict[str, str]) -> dict[str, str]:
    """camelCase scale annotations as kebab-case, and the autoscaling ones in their bounds."""
    normalized: dict[str, str] = {}
    written: dict[str, str] = {}  # normalized key -> the key as the document has it
    problems: list[tuple[Location, str]] = []
    for key, value in annotations.items():
        kebab = CAMEL_CASE_ALIASES.get(key, key)
        if kebab in normalized:
            problems.append(((key,), "given twice (camelCase and kebab-case)"))
            continue
        normalized[kebab] = value
        written[kebab] = key
    problems.extend(((written[key],), message) for key, message in annotation_problems(normalized))
    if problems:
        raise errors_at(problems)
    return normalized


StringMap = Annotated[dict[str, str], BeforeValidator(_string_keys)]
Quantity = BeforeValidator(_number_as_text)


# The document's levels, from the leaves up.


class SecretKeySelector(KnativeModel):
    refused = {"optional": "not supported"}

    name: SecretName = Field(description="the secret's name")
    key: Annotated[str, Quantity, AfterValidator(_version_as_key)] = Field(
        description="the secret version (a number or 'latest')"
    )


class KeyToPath(KnativeModel):
    """A secret volume's file: Cloud Run reads `key` as the version and `path` as the file's
    name in the volume's folder."""

    refused = {"mode": "not supported: secret files are read-only, readable by the app (0444)"}

    key: Annotated[str, Quantity, AfterValidator(_version_as_key)] = Field(
        description="the secret version (a number or 'latest')"
    )
    path: Annotated[str, AfterValidator(_file_name)] = Field(
        description="the file's name in the volume's folder"
    )


class SecretVolumeSource(KnativeModel):
    refused = {
        "optional": "not supported",
        "defaultMode": "not supported: secret files are read-only, readable by the app (0444)",
    }

    secret_name: SecretName = Field(description="the secret's name")
    # None: one file named after the secret, its latest version (Cloud Run's rule).
    items: list[KeyToPath] | None = None

    def files(self) -> list[tuple[str, str]]:
        """(file name, version) of each file the volume holds."""
        if not self.items:
            return [(self.secret_name, "latest")]
        return [(item.path, item.key) for item in self.items]


class EmptyDirVolumeSource(KnativeModel):
    medium: str = Field(description="Memory: an in-memory volume")
    size_limit: Annotated[MemoryAmount, Quantity] | None = None

    @field_validator("medium")
    @classmethod
    def _in_memory(cls, medium: str) -> str:
        if medium != "Memory":
            raise ValueError(
                f"{medium!r} is not supported: homerun's emptyDir volumes are in memory, as "
                "Cloud Run's (medium: Memory)"
            )
        return medium


class Volume(KnativeModel):
    refused = {
        "configMap": "config maps are not supported; mount a secret instead",
        "nfs": f"not supported: {_ONE_MACHINE}; use an in-memory volume (emptyDir)",
        "csi": f"not supported (Cloud Storage volumes): {_ONE_MACHINE}",
    }

    name: Annotated[str, AfterValidator(_volume_name)]
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if (self.secret is None) == (self.empty_dir is None):
            raise ValueError("expected exactly one of secret, emptyDir")
        return self


class VolumeMount(KnativeModel):
    refused = {
        "subPath": "not supported: mount the whole volume",
        "subPathExpr": "not supported: mount the whole volume",
        "mountPropagation": "not supported",
    }

    name: str = Field(description="the volume's name, from spec.template.spec.volumes")
    mount_path: Annotated[str, AfterValidator(mount_path)]
    read_only: bool | None = None


class EnvVarSource(KnativeModel):
    refused = {
        "configMapKeyRef": "config maps are not supported; use a secret or a value",
        "fieldRef": "not supported",
        "resourceFieldRef": "not supported",
    }

    secret_key_ref: SecretKeySelector | None = None

    @model_validator(mode="after")
    def _a_secret(self) -> EnvVarSource:
        if self.secret_key_ref is None:
            raise ValueError("expected secretKeyRef")
        return self


class EnvVar(KnativeModel):
    name: EnvName
    value: str | None = None
    value_from: EnvVarSource | None = None

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("expected exactly one of value, valueFrom")
        return self


class ContainerPort(KnativeModel):
    name: str = "http1"
    container_port: Annotated[int, within(1, 65535)] = DEFAULT_PORT
    protocol: str = "TCP"

    @field_validator("name")
    @classmethod
    def _http1_or_h2c(cls, name: str) -> str:
        if name not in ("http1", "h2c", ""):
            raise ValueError(
                f"{name!r} is not supported: http1 (HTTP/1.1 to the instance, the default) or "
                "h2c (HTTP/2 cleartext, as gRPC servers need)"
            )
        return name

    @field_validator("protocol")
    @classmethod
    def _tcp(cls, protocol: str) -> str:
        if protocol != "TCP":
            raise ValueError("must be TCP")
        return protocol


class ResourceLimits(KnativeModel):
    cpu: Annotated[CpuAmount, Quantity] | None = None
    memory: Annotated[MemoryAmount, Quantity] | None = None


class Resources(KnativeModel):
    refused = {"claims": "not supported"}

    limits: ResourceLimits | None = None
    requests: ResourceLimits | None = None  # recorded and shown, not reserved


class Container(KnativeModel):
    refused = {
        "envFrom": (
            "not supported: homerun's secrets are Secret Manager's (versions, no keys), as on "
            "Cloud Run; list each variable under env, with valueFrom.secretKeyRef "
            "(name: SECRET, key: VERSION or latest) for a secret"
        ),
        "lifecycle": "not supported",
        "imagePullPolicy": "homerun does not pull images",
        "terminationMessagePath": "not supported",
        "terminationMessagePolicy": "not supported",
        "stdin": _NO_STDIN,
        "stdinOnce": _NO_STDIN,
        "tty": "not supported",
    }

    name: str | None = None
    image: Annotated[str, AfterValidator(_artifact_image)] = Field(
        description=f"a homerun image, {IMAGE_REGISTRY}/SERVICE@sha256:DIGEST or NAME@sha256:DIGEST"
    )
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    ports: list[ContainerPort] | None = None
    resources: Resources | None = None
    working_dir: Annotated[str, AfterValidator(_absolute_path)] | None = None
    startup_probe: StartupProbe | None = None
    readiness_probe: ReadinessProbe | None = None
    liveness_probe: LivenessProbe | None = None
    volume_mounts: list[VolumeMount] | None = None
    security_context: SecurityContext | None = None

    @property
    def digest(self) -> str:
        return self.image.rpartition("@sha256:")[2]  # the image's form was checked

    @property
    def port(self) -> int | None:
        return self.ports[0].container_port if self.ports else None

    @property
    def h2c(self) -> bool:
        """Knative's port name h2c: the instance speaks HTTP/2 cleartext (--use-http2)."""
        return self.ports is not None and bool(self.ports) and self.ports[0].name == "h2c"

    @field_validator("ports", mode="before")
    @classmethod
    def _one_port(cls, ports: Any) -> Any:
        if isinstance(ports, list) and len(ports) > 1:
            raise ValueError("must be a list of at most one port")
        return ports

    @field_validator("env")
    @classmethod
    def _each_name_once(cls, env: list[EnvVar] | None) -> list[EnvVar] | None:
        seen: set[str] = set()
        problems: list[tuple[Location, str]] = []
        for index, variable in enumerate(env or []):
            if variable.name in seen:
                problems.append(((index, "name"), f"{variable.name} is defined twice"))
            seen.add(variable.name)
        if problems:
            raise errors_at(problems)
        return env

    @model_validator(mode="after")
    def _probe_the_container_port(self) -> Container:
        # The runtime contract: probes MUST target the inbound container port.
        port = self.port or DEFAULT_PORT
        problems: list[tuple[Location, str]] = []
        for field, probe in (
            ("startupProbe", self.startup_probe),
            ("readinessProbe", self.readiness_probe),
            ("livenessProbe", self.liveness_probe),
        ):
            if probe is not None and probe.port not in (None, 0, port):
                action = (
                    "httpGet"
                    if probe.http_get is not None
                    else "grpc"
                    if probe.grpc is not None
                    else "tcpSocket"
                )
                problems.append(
                    (
                        (field, action, "port"),
                        f"must be the container port ({port}), got {probe.port}",
                    )
                )
        if problems:
            raise errors_at(problems)
        return self


class TemplateSpec(KnativeModel):
    """spec.template.spec: Knative's RevisionSpec, a pod of one container."""

    refused = {
        "imagePullSecrets": "homerun does not pull images",
        "initContainers": "init containers are not supported",
        "responseStartTimeoutSeconds": _WHOLE_REQUEST,
        "idleTimeoutSeconds": _WHOLE_REQUEST,
        "automountServiceAccountToken": "not supported",
        "runtimeClassName": "not supported",
        "nodeSelector": _ONE_MACHINE,
        "affinity": _ONE_MACHINE,
        "tolerations": _ONE_MACHINE,
        "topologySpreadConstraints": _ONE_MACHINE,
        "hostAliases": "not supported",
        "dnsPolicy": "not supported",
        "dnsConfig": "not supported",
        "priorityClassName": "not supported",
        "schedulerName": "not supported",
        "shareProcessNamespace": "not supported",
    }

    containers: list[Container] = Field(description="a list with one container")
    container_concurrency: Annotated[
        Annotated[int, within(1, MAX_CONCURRENCY)] | None, BeforeValidator(_zero_is_not_given)
    ] = None
    timeout_seconds: Annotated[int, within(1, MAX_TIMEOUT_SECONDS)] | None = None
    service_account_name: str | None = None
    volumes: list[Volume] | None = None
    security_context: PodSecurityContext | None = None
    # false only, what homerun does (and Knative's default, which it writes into every Service
    # it stores): no variables for other services.
    enable_service_links: Annotated[bool, AfterValidator(_no_service_links)] | None = None

    @field_validator("containers", mode="before")
    @classmethod
    def _one_container(cls, containers: Any) -> Any:
        # Checked before the containers themselves: a sidecar's own problems would not help.
        if isinstance(containers, list) and not containers:
            raise ValueError("required: a list with one container")
        if isinstance(containers, list) and len(containers) > 1:
            raise ValueError("sidecars are not supported: give exactly one container")
        return containers

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> TemplateSpec:
        problems = volume_problems(self.volumes or [], self.containers[0].volume_mounts or [])
        if problems:
            raise errors_at(problems)
        return self


def volume_problems(
    volumes: Sequence[Volume],
    mounts: Sequence[VolumeMount],
    container: Location = ("containers", 0),
) -> list[tuple[Location, str]]:
    """Each volume named once and each mount naming one; secret volumes mounted read-only,
    in-memory ones writable; no secret volume left unmounted (it would be lost)."""
    problems: list[tuple[Location, str]] = []
    by_name: dict[str, Volume] = {}
    for index, volume in enumerate(volumes):
        if volume.name in by_name:
            problems.append((("volumes", index, "name"), f"{volume.name} is defined twice"))
        by_name[volume.name] = volume
    mounted: set[str] = set()
    for index, mount in enumerate(mounts):
        where = (*container, "volumeMounts", index)
        named = by_name.get(mount.name)
        if named is None:
            known = ", ".join(sorted(by_name)) or "none"
            problems.append(((*where, "name"), f"no volume named {mount.name!r} ({known})"))
            continue
        mounted.add(mount.name)
        if named.secret is not None and mount.read_only is False:
            problems.append(((*where, "readOnly"), "a secret volume is read-only"))
        if named.empty_dir is not None and mount.read_only:
            problems.append(
                ((*where, "readOnly"), "an in-memory volume mounted read-only stays empty")
            )
    try:
        check_mount_points((mount.mount_path, f"volume {mount.name}") for mount in mounts)
    except ValueError as error:
        problems.append(((*container, "volumeMounts"), str(error)))
    for index, volume in enumerate(volumes):
        if volume.secret is not None and volume.name not in mounted:
            problems.append(
                (
                    ("volumes", index),
                    f"secret volume {volume.name} is not mounted: add a volumeMount naming it, "
                    "or remove it",
                )
            )
    return problems


class RevisionMetadata(KnativeModel):
    ignored = _OUTPUT_ONLY_METADATA

    name: str | None = None  # Knative's "bring your own revision name"
    labels: StringMap | None = None
    annotations: Annotated[StringMap, AfterValidator(_scaling_annotations)] | None = None

    @field_validator("name")
    @classmethod
    def _revision_name(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None:
            return name
        if not _DNS_LABEL.match(name) or len(name) > 63:
            raise ValueError(f"{name!r} is not a DNS label (lowercase letters, digits and '-')")
        service = _service(info)
        if service and not name.startswith(f"{service}-"):
            raise ValueError(f'"{name}" must have prefix "{service}-"')
        return name


class Template(KnativeModel):
    metadata: RevisionMetadata | None = None
    spec: TemplateSpec = Field(description="the revision's containers and settings")


class TrafficTarget(KnativeModel):
    refused = {
        "configurationName": "not allowed in a Service: its configuration is implied",
        "url": "output only: status.traffic shows the URL of a tag",
    }

    revision_name: str | None = None
    latest_revision: bool | None = None  # Knative's default: true exactly without revisionName
    percent: int = 0  # 0..100, checked with the other targets (traffic_problems)
    tag: str | None = None

    @field_validator("revision_name")
    @classmethod
    def _named(cls, revision: str | None) -> str | None:
        if revision == "":
            raise ValueError("must be a revision name")
        return revision

    @field_validator("tag")
    @classmethod
    def _tag(cls, tag: str | None, info: ValidationInfo) -> str | None:
        if tag is not None:
            try:
                check_tag(tag, _service(info) or "x", where="")
            except InvalidSpec as error:
                raise ValueError(str(error).removeprefix(": ")) from None
        return tag

    @model_validator(mode="after")
    def _revision_or_latest(self) -> TrafficTarget:
        latest = self.latest_revision
        if latest is not None and (self.revision_name is not None) == latest:
            raise errors_at(
                [
                    (
                        ("latestRevision",),
                        f'may not set revisionName "{self.revision_name or ""}" when '
                        f"latestRevision is {str(latest).lower()}",
                    )
                ]
            )
        return self

    def entry(self) -> TrafficEntry:
        latest = (
            self.revision_name is None if self.latest_revision is None else self.latest_revision
        )
        revision = None if latest else self.revision_name
        return TrafficEntry(percent=self.percent, revision=revision, latest=latest, tag=self.tag)


class ServiceSpec(KnativeModel):
    template: Template = Field(description="the revision template")
    traffic: list[TrafficTarget] | None = None  # none: LATEST=100

    @field_validator("traffic", mode="before")
    @classmethod
    def _some_targets(cls, traffic: Any) -> Any:
        if traffic == []:
            raise ValueError("must be a list of traffic targets")
        return traffic

    @field_validator("traffic")
    @classmethod
    def _knative_route_rules(cls, traffic: list[TrafficTarget] | None) -> Any:
        if traffic is not None:
            problems = traffic_problems(target.entry() for target in traffic)
            if problems:
                raise errors_at((_traffic_location(where), message) for where, message in problems)
        return traffic


class ServiceMetadata(KnativeModel):
    refused = {
        "generateName": "give the service a name",
        "ownerReferences": "not supported",
        "finalizers": "not supported",
    }
    ignored = _OUTPUT_ONLY_METADATA

    name: ServiceName = Field(description="the service's name")
    labels: StringMap | None = None
    annotations: Annotated[StringMap, AfterValidator(_without_server_annotations)] | None = None


class ServiceDocument(KnativeModel):
    ignored = frozenset({"status"})

    api_version: str = Field(description=API_VERSION)
    kind: str = Field(description="Service")
    metadata: ServiceMetadata = Field(description="the service's name, labels and annotations")
    spec: ServiceSpec = Field(description="the revision template and the traffic")

    @field_validator("api_version")
    @classmethod
    def _v1(cls, api_version: str) -> str:
        if api_version != API_VERSION:
            raise ValueError(f"must be {API_VERSION}, got {api_version!r}")
        return api_version

    @field_validator("kind")
    @classmethod
    def _a_service(cls, kind: str) -> str:
        if kind != "Service":
            raise ValueError(f"must be Service, got {kind!r}")
        return kind


def _service(info: ValidationInfo) -> str:
    """The service's name, which revision names and tags are checked against."""
    context = info.context if isinstance(info.context, dict) else {}
    return str(context.get("service") or "")


_TRAFFIC_PROBLEM_AT = re.compile(r"\[(\d+)\]\.(\w+)")


def _traffic_location(where: str) -> Location:
    """traffic_problems' "[1].percent" under spec.traffic -> (1, "percent")."""
    match = _TRAFFIC_PROBLEM_AT.fullmatch(where)
    return (int(match.group(1)), match.group(2)) if match else ()
