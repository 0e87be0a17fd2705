"""`homerun services export`: one revision's template as a Knative Service that a cluster with
Knative Serving (`kubectl apply -f`) or Cloud Run (`gcloud run services replace`) takes: the
image as a registry serves it, pinned by digest; no status, no homerun-only annotations, no
revision names or tags (the other side has none of homerun's revisions); checked with the
rules `services replace` reads a document with, and Knative's own that homerun does not need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homerun.errors import InvalidSpec
from homerun.knative.models import API_VERSION, DEFAULT_PORT
from homerun.knative.reader import parse_service
from homerun.knative.render import render_template
from homerun.model.annotations import CAMEL_CASE_ALIASES
from homerun.model.images import parse_image_name
from homerun.model.limits import concurrency_beyond_cpu
from homerun.spec import RevisionSpec

# Knative's queue-proxy and its metrics and profiling servers listen on these in every pod
# (pkg/apis/serving/k8s_validation.go, reservedPorts): a container may not.
KNATIVE_RESERVED_PORTS = frozenset({8008, 8012, 8013, 8022, 9090, 9091})
# homerun's own annotations (homerun.dev/source: the folder a revision was built from;
# run.homerun.dev/...: homerun's settings beyond Cloud Run): meaningless elsewhere.
_HOMERUN_PREFIXES = ("homerun.dev/", "run.homerun.dev/")
# Cloud Run's: Knative would keep them but does nothing with them; Cloud Run reads them.
_CLOUD_RUN_PREFIXES = ("run.googleapis.com/", "cloud.googleapis.com/")
# gcloud writes the scale bounds camelCase, as Cloud Run's docs do.
_CAMEL_CASE = {kebab: camel for camel, kebab in CAMEL_CASE_ALIASES.items()}


class ExportError(InvalidSpec):
    """The revision cannot be written as a Service the other side would take."""


def export_service(
    name: str,
    spec: RevisionSpec,
    image: str,
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    cloud_run: bool = False,
) -> dict[str, Any]:
    """The Service document for `spec` running `image` (`registry/path@sha256:…`); with
    `cloud_run`, the form `gcloud run services describe --format export` prints.
    ExportError says what Knative would refuse, and what to change."""
    pinned = parse_image_name(image, "the exported image")
    if spec.cpu is not None and concurrency_beyond_cpu(spec.cpu, spec.container_concurrency):
        # A revision kept from before homerun refused it: the deploy's advice cannot be taken
        # by an export.
        raise ExportError(
            f"the revision runs at --cpu {spec.cpu} with concurrency "
            f'{spec.container_concurrency}, which Cloud Run refuses ("Total cpu < 1 is not '
            f'supported with concurrency > 1"): run `homerun services update {name} '
            "--concurrency 1` (or `--cpu 1`) first, then export"
        )
    if pinned.digest is None:
        raise ExportError(f"{image}: an exported image must be pinned to its digest (@sha256:…)")
    template = render_template(spec, image)
    container = template["spec"]["containers"][0]
    container["image"] = image
    default_startup = spec.startup_probe is None
    if default_startup and not cloud_run:
        # homerun's default is "TCP to the port, one try over the startup budget", which is
        # how Cloud Run prints its own; on Kubernetes a first failed try would restart the
        # container, and Knative's queue-proxy already waits for the port.
        del container["startupProbe"]
    metadata = template["metadata"]
    kept = _kept(metadata.get("annotations", {}), cloud_run)
    if cloud_run:
        kept = {_CAMEL_CASE.get(key, key): value for key, value in kept.items()}
    _set_or_drop(metadata, "annotations", kept)
    _set_or_drop(metadata, "labels", _kept(metadata.get("labels", {}), cloud_run))
    service_metadata: dict[str, Any] = {"name": name}
    _set_or_drop(service_metadata, "labels", _kept(labels, cloud_run))
    _set_or_drop(service_metadata, "annotations", _kept(annotations, cloud_run))
    document = {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": service_metadata,
        "spec": {
            "template": template,
            # All to the one revision the template makes: the other side has none of
            # homerun's revisions (or tags) to split between.
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
    }
    check_export(document)
    return document


def check_export(document: dict[str, Any]) -> None:
    """The rules `services replace` reads with (containerConcurrency 1..1000, timeoutSeconds,
    env names, probes on the container port, scale annotations...), and Knative's reserved
    ports; ExportError lists what fails."""
    parse_service(document, where="the exported Service").template.spec.check()
    container = document["spec"]["template"]["spec"]["containers"][0]
    ports: list[dict[str, Any]] = container.get("ports") or [{}]
    port = ports[0].get("containerPort", DEFAULT_PORT)
    if port in KNATIVE_RESERVED_PORTS:
        raise ExportError(
            f"the container port {port} is reserved in a Knative pod (its queue-proxy, metrics "
            f"and profiling use {', '.join(map(str, sorted(KNATIVE_RESERVED_PORTS)))}); deploy "
            "with another --port (the app listening on $PORT) before exporting"
        )


def _kept(values: Mapping[str, str], cloud_run: bool) -> dict[str, str]:
    dropped = _HOMERUN_PREFIXES if cloud_run else _HOMERUN_PREFIXES + _CLOUD_RUN_PREFIXES
    return {key: value for key, value in sorted(values.items()) if not key.startswith(dropped)}


def _set_or_drop(metadata: dict[str, Any], key: str, values: dict[str, str]) -> None:
    if values:
        metadata[key] = values
    else:
        metadata.pop(key, None)
