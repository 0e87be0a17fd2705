"""What a deploy or a `services replace` will do, decided before anything is done: a pure
function of the request and what the store holds (no I/O, no time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from homerun.access.iam import check_ingress
from homerun.errors import InvalidSpec, NotFound
from homerun.knative import SOURCE_ANNOTATION, ServiceManifest
from homerun.spec import (
    DESCRIPTION_ANNOTATION,
    DeployRequest,
    RevisionSpec,
    revision_name_with_suffix,
    validate_service_name,
)
from homerun.store import RevisionRecord
from homerun.traffic import (
    DEFAULT_TRAFFIC,
    TrafficEntry,
    check_tag,
    check_target,
    pin_latest,
    retag,
)


@dataclass(frozen=True)
class Build:
    """Build the revision's artifact from a source folder."""

    source: Path
    reason: str = ""  # why a rebuild, when the caller asked for none


@dataclass(frozen=True)
class Reuse:
    """Copy the artifact of an existing revision: same code, same virtualenv, new settings."""

    revision: RevisionRecord


@dataclass(frozen=True)
class FromImage:
    """Copy the artifact of an image in the local image store (`deploy --image`)."""

    image: str  # pinned: repository@sha256:…


@dataclass(frozen=True)
class TrafficAfter:
    """What the service's traffic block becomes once the new revision is ready."""

    replace: tuple[TrafficEntry, ...] | None = None  # services replace: the document's block
    pin_to: str | None = None  # --no-traffic: LATEST's share stays on this revision
    tag: str | None = None  # --tag: the new revision gets it

    def apply(self, entries: tuple[TrafficEntry, ...], new: str) -> tuple[TrafficEntry, ...]:
        if self.replace is not None:
            return self.replace
        entries = entries or DEFAULT_TRAFFIC
        if self.pin_to is not None:
            entries = pin_latest(entries, self.pin_to)
        if self.tag:
            entries = retag(entries, {self.tag: new})
        return entries


@dataclass(frozen=True)
class Metadata:
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass(frozen=True)
class NewRevision:
    """Make a revision; only once it answers, apply `traffic` (and metadata)."""

    service: str
    spec: RevisionSpec
    artifact: Build | Reuse | FromImage
    traffic: TrafficAfter
    name: str | None = None  # None: the next SERVICE-0000N-xyz
    allow_unauthenticated: bool | None = None
    ingress: str | None = None
    metadata: Metadata | None = None
    # Entrypoint flags this deploy did not give but kept from the current template, with
    # their values: a start failure names them, since the user may not remember them.
    carried_over: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NoChange:
    """The template is unchanged: no revision; service-level settings may still change."""

    service: str
    base: RevisionRecord
    tag: str | None = None  # --tag alone: tag the current revision
    allow_unauthenticated: bool | None = None
    ingress: str | None = None
    traffic: tuple[TrafficEntry, ...] | None = None  # services replace: the document's block
    metadata: Metadata | None = None
    changes: list[str] = field(default_factory=list)


Plan = NewRevision | NoChange

_IMAGE_ENTRYPOINT = (
    "--command and --args cannot change what an image built without a container engine runs "
    "(its entrypoint was fixed when it was built); put the command in the Dockerfile's CMD "
    "and build the image again, or deploy the folder with --source DIR --command ..."
)


def plan_deploy(
    request: DeployRequest,
    base: RevisionRecord | None,
    previous_ready: RevisionRecord | None,
    metadata: Metadata | None = None,
    *,
    container_image: bool = False,
) -> Plan:
    """`homerun deploy` / `services update`: `base` is the service's latest created revision
    (its current template), `previous_ready` its latest ready one, `metadata` the service's
    labels and annotations; None for a new service. `container_image`: the image --image
    names runs as containers, whose ENTRYPOINT and CMD --command and --args replace at each
    start."""
    service = validate_service_name(request.service)
    new_metadata = _metadata_after(request, metadata)
    name = (
        revision_name_with_suffix(service, request.revision_suffix)
        if request.revision_suffix
        else None
    )
    if request.tag is not None:
        check_tag(request.tag, service, "--tag")
    if request.ingress is not None:
        check_ingress(request.ingress)
    changes = request.changes
    if base is None and changes.source is None and changes.image is None:
        raise NotFound(
            f"service {service!r} not found; deploy it first with "
            f"`homerun deploy {service} --source DIR` (or --image IMAGE)"
        )
    # gcloud: whatever the flags do not change is kept from the service's current template.
    spec = changes.apply(base.spec if base else None)
    if request.no_traffic and previous_ready is None:
        raise InvalidSpec(
            f"--no-traffic: {service} has no ready revision that could keep the traffic; "
            "deploy without --no-traffic"
        )
    artifact: Build | Reuse | FromImage
    if changes.image is not None:
        if (changes.command or changes.args) and not container_image:
            raise InvalidSpec(_IMAGE_ENTRYPOINT)
        # An image runs its own entrypoint: a --command kept from a source deploy goes.
        spec = spec.model_copy(
            update={
                "command": changes.command or None if container_image else None,
                "args": changes.args or None if container_image else None,
            }
        )
        if (
            base is not None
            and spec.configuration() == base.spec.configuration()
            and name in (None, base.name)
        ):
            # The same digest with the same settings: the template is unchanged (Knative).
            return NoChange(
                service,
                base,
                tag=request.tag,
                allow_unauthenticated=request.allow_unauthenticated,
                ingress=request.ingress,
                metadata=new_metadata,
            )
        artifact = FromImage(changes.image)
    elif changes.source is not None:
        artifact = Build(Path(changes.source))
    else:
        assert base is not None  # a new service without --source was refused above
        # A new name is a new template (Knative), even with the same settings.
        if spec.configuration() == base.spec.configuration() and name in (None, base.name):
            return NoChange(
                service,
                base,
                tag=request.tag,
                allow_unauthenticated=request.allow_unauthenticated,
                ingress=request.ingress,
                metadata=new_metadata,
            )
        in_container = base.artifact is not None and base.artifact.engine_image is not None
        if spec.entrypoint_inputs() != base.spec.entrypoint_inputs() and in_container:
            # A container's ENTRYPOINT and CMD are replaced at its start: no rebuild.
            artifact = Reuse(base)
        elif spec.entrypoint_inputs() != base.spec.entrypoint_inputs() and spec.image:
            raise InvalidSpec(_IMAGE_ENTRYPOINT)
        elif spec.entrypoint_inputs() != base.spec.entrypoint_inputs():
            artifact = Build(
                Path(spec.source),
                "the entrypoint changes (--command, --args, --function, --base-image or a "
                f"GOOGLE_* variable), so the source is built again from {spec.source}",
            )
        else:
            artifact = Reuse(base)
    pinned = previous_ready.name if request.no_traffic and previous_ready else None
    carried_over = {}
    if base is not None:
        for flag, given, kept in (
            ("--command", changes.command, spec.command),
            ("--args", changes.args, spec.args),
        ):
            if given is None and kept:
                carried_over[flag] = ",".join(kept)
    return NewRevision(
        service,
        spec,
        artifact,
        TrafficAfter(pin_to=pinned, tag=request.tag),
        name=name,
        allow_unauthenticated=request.allow_unauthenticated,
        ingress=request.ingress,
        metadata=new_metadata,
        carried_over=carried_over,
    )


def _metadata_after(request: DeployRequest, current: Metadata | None) -> Metadata | None:
    """The service's labels and annotations after --labels and --description; None when the
    request changes neither."""
    if not request.update_labels and request.description is None:
        return None
    labels = dict(current.labels) if current else {}
    annotations = dict(current.annotations) if current else {}
    labels.update(request.update_labels)
    if request.description == "":
        annotations.pop(DESCRIPTION_ANNOTATION, None)
    elif request.description is not None:
        annotations[DESCRIPTION_ANNOTATION] = request.description
    return Metadata(labels, annotations)


@dataclass(frozen=True)
class ReplaceFacts:
    """What `plan_replace` needs to know of the store (the caller looks it up)."""

    base: RevisionRecord | None  # the service's latest created revision
    base_digest: str | None
    named: RevisionRecord | None  # the revision named by the template, if it exists
    named_digest: str | None
    statuses: dict[str, str]  # the service's revisions
    next_name: str  # the name a new revision would get
    origin: RevisionRecord | None  # a revision whose artifact has the template's digest


def plan_replace(manifest: ServiceManifest, facts: ReplaceFacts) -> Plan:
    """`homerun services replace`: a changed template makes a revision, the traffic block and
    metadata are applied once it is ready."""
    service, base, template = manifest.name, facts.base, manifest.template
    source = template.source or (base.spec.source if base else "")
    spec = template.spec.model_copy(update={"source": source})
    spec.check()
    changed = base is None or (
        spec.configuration() != base.spec.configuration() or template.digest != facts.base_digest
    )
    if template.name is not None and facts.named is not None:
        named = facts.named
        same = (
            named.service == service
            and named.spec.configuration() == spec.configuration()
            and facts.named_digest == template.digest
        )
        if not same or (base is not None and named.name != base.name):
            raise InvalidSpec(
                f"spec.template.metadata.name: revision {template.name} already exists "
                "with another template; a changed template needs a new name (or none)"
            )
        changed = False
    new_name = (template.name or facts.next_name) if changed else None
    for index, entry in enumerate(manifest.traffic):
        if entry.latest or entry.revision == new_name:
            continue
        check_target(
            str(entry.revision), service, facts.statuses, f"spec.traffic[{index}].revisionName"
        )
    metadata = Metadata(manifest.labels, manifest.annotations)
    if not changed:
        assert base is not None  # a new service is always a change
        return NoChange(service, base, traffic=manifest.traffic, metadata=metadata)
    artifact: Build | Reuse
    origin = facts.origin
    if origin is not None and origin.spec.entrypoint_inputs() == spec.entrypoint_inputs():
        artifact = Reuse(origin)
    elif origin is not None:
        artifact = Build(
            Path(source or origin.spec.source),
            "the entrypoint changes (command, args, function, base image or a GOOGLE_* "
            f"variable), so the source is built again from {source or origin.spec.source}",
        )
    elif template.source:
        artifact = Build(
            Path(template.source),
            f"no artifact here has the image's digest, so it is built from "
            f"{SOURCE_ANNOTATION}: {template.source}",
        )
    else:
        raise InvalidSpec(
            "spec.template.spec.containers[0].image: no revision here has this artifact "
            f"digest, and there is no {SOURCE_ANNOTATION} annotation to build it from"
        )
    return NewRevision(
        service,
        spec,
        artifact,
        TrafficAfter(replace=manifest.traffic),
        name=new_name,
        metadata=metadata,
    )
