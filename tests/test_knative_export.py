"""`services export`: revisions written as Knative Services (and Cloud Run's form), checked
against Knative Serving's CRD schema (cloudcoil's models of it) and read back by homerun."""

from __future__ import annotations

from typing import Any

import pytest
from cloudcoil.models.knative_serving.serving import v1 as knative

from homerun.errors import InvalidSpec
from homerun.knative import parse_service
from homerun.knative.export import ExportError, export_service
from homerun.model.probes import Probe, ProbeAction
from homerun.spec import RevisionSpec, SecretRef

PINNED = f"127.0.0.1:5000/hello@sha256:{'a' * 64}"


def _crd_valid(document: dict[str, Any]) -> None:
    """The document as the CRD's schema reads it: strictly typed (no "80" for 80), and every
    field known to the schema (one it does not know would be dropped, so the dump differs)."""
    service = knative.Service.model_validate(document, strict=True)
    assert service.model_dump(mode="json", by_alias=True, exclude_unset=True) == document


def _export(spec: RevisionSpec, *, cloud_run: bool = False, **metadata: Any) -> dict[str, Any]:
    document = export_service(
        "hello",
        spec,
        PINNED,
        labels=metadata.get("labels", {}),
        annotations=metadata.get("annotations", {}),
        cloud_run=cloud_run,
    )
    _crd_valid(document)
    return document


def _container(document: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return container


def test_a_plain_revision() -> None:
    document = _export(RevisionSpec(source="/src/hello"))
    assert document == {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {
                    "containerConcurrency": 80,
                    "timeoutSeconds": 300,
                    "containers": [{"image": PINNED}],
                },
            },
            "traffic": [{"latestRevision": True, "percent": 100}],
        },
    }


def test_concurrency_env_secrets_limits_port_and_scale() -> None:
    spec = RevisionSpec(
        source="/src/hello",
        image=f"127.0.0.1:5000/hello@sha256:{'b' * 64}",  # homerun's digest: replaced
        container_concurrency=12,
        timeout_seconds=900,
        env={"MODE": "prod", "GREETING": "hi there"},
        secrets={"API_KEY": SecretRef(secret="api-key", version="3")},
        cpu="2",
        memory="1Gi",
        container_port=9000,
        annotations={
            "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/max-scale": "7",
            "autoscaling.knative.dev/target": "10",
            "run.homerun.dev/concurrency": "auto",
            "run.googleapis.com/cpu-throttling": "false",
        },
        labels={"team": "web"},
    )
    document = _export(
        spec,
        labels={"env": "staging"},
        annotations={"run.googleapis.com/description": "the greeter"},
    )
    template = document["spec"]["template"]
    assert template["metadata"] == {
        "annotations": {
            "autoscaling.knative.dev/max-scale": "7",
            "autoscaling.knative.dev/min-scale": "1",
            "autoscaling.knative.dev/target": "10",
        },
        "labels": {"team": "web"},
    }
    assert template["spec"]["containerConcurrency"] == 12
    assert template["spec"]["timeoutSeconds"] == 900
    container = _container(document)
    assert container["image"] == PINNED
    assert container["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "GREETING", "value": "hi there"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api-key", "key": "3"}}},
    ]
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "1Gi"}}
    assert container["ports"] == [{"name": "http1", "containerPort": 9000}]
    assert document["metadata"] == {"name": "hello", "labels": {"env": "staging"}}


def test_probes_are_kept_and_homeruns_default_startup_probe_is_not() -> None:
    started = Probe(action=ProbeAction.HTTP, path="/started", failure_threshold=30)
    spec = RevisionSpec(
        source="/s",
        startup_probe=started,
        startup_timeout_seconds=started.budget,  # as deploy records it
        liveness_probe=Probe(action=ProbeAction.HTTP, path="/healthz", period_seconds=10),
        readiness_probe=Probe(action=ProbeAction.HTTP, path="/ready", period_seconds=1),
        use_http2=True,
    )
    container = _container(_export(spec))
    assert container["startupProbe"]["httpGet"] == {"path": "/started", "port": 8080}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["periodSeconds"] == 1
    assert container["ports"] == [{"name": "h2c"}]
    assert "startupProbe" not in _container(_export(RevisionSpec(source="/s")))


def test_the_cloud_run_form() -> None:
    spec = RevisionSpec(
        source="/s",
        annotations={
            "autoscaling.knative.dev/max-scale": "5",
            "run.googleapis.com/cpu-throttling": "false",
        },
    )
    document = _export(spec, cloud_run=True, annotations={"run.googleapis.com/ingress": "internal"})
    assert document["metadata"]["annotations"] == {"run.googleapis.com/ingress": "internal"}
    assert document["spec"]["template"]["metadata"]["annotations"] == {
        "autoscaling.knative.dev/maxScale": "5",  # as gcloud prints it
        "run.googleapis.com/cpu-throttling": "false",
    }
    # Cloud Run's own default startup probe, as gcloud prints it.
    assert _container(document)["startupProbe"] == {
        "tcpSocket": {"port": 8080},
        "timeoutSeconds": 240,
        "periodSeconds": 240,
        "failureThreshold": 1,
    }
    assert document["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]


def test_the_export_reads_back_as_the_same_revision() -> None:
    spec = RevisionSpec(
        source="/src/hello",
        container_concurrency=5,
        env={"A": "1"},
        secrets={"B": SecretRef(secret="b", version="latest")},
        memory="256Mi",
        annotations={"autoscaling.knative.dev/max-scale": "3"},
        liveness_probe=Probe(action=ProbeAction.HTTP, path="/healthz"),
    )
    for cloud_run in (False, True):
        manifest = parse_service(_export(spec, cloud_run=cloud_run))
        read = manifest.template.spec
        assert read.image == PINNED
        assert read.model_dump(exclude={"source", "image"}) == spec.model_dump(
            exclude={"source", "image"}
        )
        assert manifest.template.digest == "a" * 64


@pytest.mark.parametrize("port", [8012, 8013, 8022, 9090, 9091, 8008])
def test_a_port_knative_reserves_is_refused(port: int) -> None:
    with pytest.raises(ExportError, match=f"the container port {port} is reserved in a Knative"):
        export_service(
            "hello",
            RevisionSpec(source="/s", container_port=port),
            PINNED,
            labels={},
            annotations={},
        )


def test_an_image_without_a_digest_is_refused() -> None:
    with pytest.raises(ExportError, match="pinned to its digest"):
        export_service(
            "hello", RevisionSpec(source="/s"), "127.0.0.1:5000/hello:v1", labels={}, annotations={}
        )


def test_the_crd_check_can_fail() -> None:
    """The schema check itself: an unknown field and a number as text are caught."""
    document = _export(RevisionSpec(source="/s"))
    _container(document)["imagePolicy"] = "Always"
    with pytest.raises(AssertionError):
        _crd_valid(document)
    document = _export(RevisionSpec(source="/s"))
    document["spec"]["template"]["spec"]["containerConcurrency"] = "80"
    with pytest.raises(ValueError):
        _crd_valid(document)


def test_a_reserved_env_name_is_refused_as_knative_refuses_it() -> None:
    """Knative's webhook refuses PORT and K_* in env; so does the export's check."""
    with pytest.raises(InvalidSpec, match="K_SERVICE is reserved"):
        export_service(
            "hello",
            RevisionSpec(source="/s", env={"K_SERVICE": "other"}),
            PINNED,
            labels={},
            annotations={},
        )


def test_more_than_one_request_at_a_time_below_one_cpu_is_refused_as_cloud_run_refuses_it() -> None:
    """A revision kept from before the rule (its concurrency 80 at half a CPU) exports to what
    Cloud Run would refuse: the export says so."""
    kept = RevisionSpec.model_validate({"source": "/s", "cpu": "500m", "container_concurrency": 80})
    with pytest.raises(ExportError, match="run `homerun services update hello --concurrency 1`"):
        export_service("hello", kept, PINNED, labels={}, annotations={}, cloud_run=True)
