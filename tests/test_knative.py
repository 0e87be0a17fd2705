"""Knative Service documents: what describe renders parses back to the same thing, and
validation names the field path of every problem, with Knative's rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from homerun.errors import InvalidSpec
from homerun.knative import (
    SOURCE_ANNOTATION,
    RevisionView,
    ServiceView,
    image_for,
    parse_service,
    render_revision,
    render_service,
    render_template,
)
from homerun.model.probes import Probe, ProbeAction
from homerun.model.states import RevisionStatus
from homerun.spec import DEFAULT_CONCURRENCY, MemoryVolume, RevisionSpec, SecretRef
from homerun.traffic import DEFAULT_TRAFFIC, TrafficEntry

DIGEST = "ab" * 32
IMAGE = image_for("svc", DIGEST)


def service_view(
    spec: RevisionSpec,
    traffic: tuple[TrafficEntry, ...] = DEFAULT_TRAFFIC,
    status: RevisionStatus = RevisionStatus.READY,
    message: str = "",
) -> ServiceView:
    revisions = [
        RevisionView("svc-00002-abc", "svc", spec, status, message, 2000.0, 2001.0, DIGEST),
        RevisionView(
            "svc-00001-xyz", "svc", spec, RevisionStatus.READY, "", 1000.0, 1001.0, "cd" * 32
        ),
    ]
    return ServiceView(
        name="svc",
        created_at=1000.0,
        generation=4,
        labels={"team": "web"},
        annotations={"run.googleapis.com/ingress": "all"},
        traffic=traffic,
        revisions=revisions,
        url="http://svc.localhost:8080",
        tag_urls={"old": "http://old---svc.localhost:8080"},
    )


def minimal(**template_spec: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"image": IMAGE}]}
    spec.update(template_spec)
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "svc"},
        "spec": {"template": {"spec": spec}},
    }


# -- rendering ----------------------------------------------------------------------------------


def test_describe_renders_a_knative_service() -> None:
    spec = RevisionSpec(
        source="/src/app",
        env={"MODE": "prod"},
        secrets={"DB_PASSWORD": SecretRef(secret="db", version="2")},
        annotations={"autoscaling.knative.dev/max-scale": "5"},
        container_concurrency=10,
        timeout_seconds=60,
        cpu="1",
        memory="512Mi",
    )
    traffic = (
        TrafficEntry(90, latest=True),
        TrafficEntry(10, "svc-00001-xyz"),
        TrafficEntry(0, "svc-00001-xyz", tag="old"),
    )
    document = render_service(service_view(spec, traffic))
    assert document["apiVersion"] == "serving.knative.dev/v1"
    assert document["kind"] == "Service"
    assert document["metadata"]["labels"] == {"team": "web"}
    template = document["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "autoscaling.knative.dev/max-scale": "5",
        SOURCE_ANNOTATION: "/src/app",
    }
    assert template["spec"]["containerConcurrency"] == 10
    assert template["spec"]["timeoutSeconds"] == 60
    container = template["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["env"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "2"}}},
    ]
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "512Mi"}}
    assert container["startupProbe"]["tcpSocket"] == {"port": 8080}
    status = document["status"]
    assert status["url"] == status["address"]["url"] == "http://svc.localhost:8080"
    assert status["latestReadyRevisionName"] == status["latestCreatedRevisionName"]
    kinds = [condition["type"] for condition in status["conditions"]]
    assert kinds == ["Ready", "ConfigurationsReady", "RoutesReady"]
    assert all(c["status"] == "True" for c in status["conditions"])
    assert status["traffic"] == [
        {"revisionName": "svc-00002-abc", "latestRevision": True, "percent": 90},
        {"revisionName": "svc-00001-xyz", "latestRevision": False, "percent": 10},
        {
            "tag": "old",
            "revisionName": "svc-00001-xyz",
            "latestRevision": False,
            "url": "http://old---svc.localhost:8080",
        },
    ]


def test_a_failed_latest_revision_makes_the_service_not_ready() -> None:
    spec = RevisionSpec(source="/src")
    document = render_service(
        service_view(spec, status=RevisionStatus.FAILED, message="the app exited\nmore")
    )
    ready, configurations, routes = document["status"]["conditions"]
    assert configurations["status"] == "False"
    assert configurations["reason"] == "RevisionFailed"
    assert "svc-00002-abc" in configurations["message"]
    assert ready["status"] == "False"
    # The traffic (LATEST) still finds svc-00001-xyz ready, and serves from it.
    assert routes["status"] == "True"
    assert document["status"]["latestReadyRevisionName"] == "svc-00001-xyz"


def test_a_revision_document() -> None:
    view = RevisionView(
        "svc-00001-xyz", "svc", RevisionSpec(source="/s"), RevisionStatus.READY, "", 1, 2, None
    )
    document = render_revision(view, routed=True, image=IMAGE)
    assert document["kind"] == "Revision"
    assert document["metadata"]["labels"]["serving.knative.dev/service"] == "svc"
    assert document["status"]["imageDigest"] == IMAGE
    assert {c["type"] for c in document["status"]["conditions"]} == {"Ready", "Active"}


# -- round trips ---------------------------------------------------------------------------------

names = st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name not in {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
)
text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=20)


@st.composite
def probes(draw: st.DrawFn, *, startup: bool = False, readiness: bool = False) -> Probe:
    action = draw(st.sampled_from([ProbeAction.HTTP, ProbeAction.EXEC, ProbeAction.TCP]))
    if startup and action is ProbeAction.TCP:
        action = ProbeAction.HTTP  # a TCP startup probe is the default one (its budget)
    return Probe(
        action=action,
        path=draw(st.sampled_from(["/", "/ready", "/healthz?deep=1"]))
        if action is ProbeAction.HTTP
        else "/",
        headers=tuple(draw(st.lists(st.tuples(st.just("X-Probe"), text), max_size=2)))
        if action is ProbeAction.HTTP
        else (),
        command=("cat", "/tmp/healthy") if action is ProbeAction.EXEC else (),
        initial_delay_seconds=draw(st.integers(0, 30)),
        period_seconds=draw(st.integers(0 if readiness else 1, 60)),
        timeout_seconds=draw(st.integers(1, 10)),
        success_threshold=draw(st.integers(1, 5)) if readiness else 1,
        failure_threshold=draw(st.integers(1, 10)),
    )


@st.composite
def revision_specs(draw: st.DrawFn) -> RevisionSpec:
    startup = draw(st.none() | probes(startup=True))
    env_names = draw(st.lists(names, max_size=4, unique=True))
    split = draw(st.integers(0, len(env_names)))
    annotations = {}
    if draw(st.booleans()):
        annotations["autoscaling.knative.dev/max-scale"] = str(draw(st.integers(1, 1000)))
    if draw(st.booleans()):
        annotations["run.googleapis.com/cpu-throttling"] = "false"
    return RevisionSpec(
        source=draw(st.sampled_from(["/src/app", "/home/me/api"])),
        command=draw(st.none() | st.lists(text, min_size=1, max_size=3)),
        args=draw(st.none() | st.lists(text, min_size=1, max_size=3)),
        env={name: draw(text) for name in env_names[:split]},
        secrets={
            name: SecretRef(
                secret=draw(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)),
                version=draw(st.sampled_from(["latest", "1", "12"])),
            )
            for name in env_names[split:]
        },
        container_concurrency=draw(st.integers(1, 1000)),
        timeout_seconds=draw(st.integers(1, 3600)),
        startup_timeout_seconds=startup.budget if startup else draw(st.integers(1, 3600)),
        startup_probe=startup,
        readiness_probe=draw(st.none() | probes(readiness=True)),
        liveness_probe=draw(st.none() | probes()),
        working_dir=draw(st.none() | st.sampled_from(["/app", "/workspace/src"])),
        cpu_request=draw(st.none() | st.sampled_from(["1", "250m"])),
        memory_request=draw(st.none() | st.sampled_from(["128Mi"])),
        annotations=annotations,
        labels=draw(st.dictionaries(st.sampled_from(["app", "team"]), text, max_size=2)),
        cpu=draw(st.none() | st.sampled_from(["1", "2", "500m"])),
        memory=draw(st.none() | st.sampled_from(["512Mi", "2Gi"])),
        container_port=draw(st.none() | st.integers(1, 65535)),
        container_name=draw(st.none() | st.just("app")),
        service_account=draw(st.none() | st.just("robot@example.iam")),
        use_http2=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(revision_specs())
def test_a_rendered_template_parses_back_to_the_same_spec(spec: RevisionSpec) -> None:
    document = render_service(service_view(spec))
    # Through YAML text, as a user's file would be.
    reread = yaml.safe_load(yaml.safe_dump(document, sort_keys=False))
    manifest = parse_service(reread)
    assert manifest.template.spec == spec
    assert manifest.template.digest == DIGEST
    assert manifest.template.source == spec.source
    assert manifest.traffic == DEFAULT_TRAFFIC
    assert manifest.labels == {"team": "web"}
    # And rendering what was parsed gives the same template again.
    assert render_template(manifest.template.spec, IMAGE) == document["spec"]["template"]


def test_the_port_name_h2c_is_use_http2() -> None:
    spec = RevisionSpec(source="/src", use_http2=True)
    container = render_template(spec, IMAGE)["spec"]["containers"][0]
    assert container["ports"] == [{"name": "h2c"}]
    with_port = render_template(spec.model_copy(update={"container_port": 50051}), IMAGE)
    assert with_port["spec"]["containers"][0]["ports"] == [{"name": "h2c", "containerPort": 50051}]
    document = render_service(service_view(spec))
    assert parse_service(document).template.spec.use_http2


def test_traffic_round_trips() -> None:
    traffic = (
        TrafficEntry(40, latest=True, tag="current"),
        TrafficEntry(60, "svc-00001-xyz"),
        TrafficEntry(0, "svc-00001-xyz", tag="old"),
    )
    document = render_service(service_view(RevisionSpec(source="/s"), traffic))
    assert parse_service(document).traffic == traffic


# -- validation ----------------------------------------------------------------------------------


def test_below_one_cpu_the_default_concurrency_is_one_as_cloud_runs() -> None:
    limits = "spec/template/spec/containers/0/resources"
    fractional = _set(minimal(), limits, {"limits": {"cpu": "500m"}})
    assert parse_service(fractional).template.spec.container_concurrency == 1
    zero = _set(fractional, "spec/template/spec/containerConcurrency", 0)
    assert parse_service(zero).template.spec.container_concurrency == 1


def test_the_minimal_document_gets_knative_defaults() -> None:
    manifest = parse_service(minimal())
    assert manifest.traffic == DEFAULT_TRAFFIC
    assert manifest.template.spec.container_concurrency == 80
    assert manifest.template.spec.timeout_seconds == 300
    assert manifest.template.spec.startup_timeout_seconds == 240
    assert manifest.template.name is None


def test_camel_case_scale_annotations_are_read_as_knative_does() -> None:
    document = minimal()
    document["spec"]["template"]["metadata"] = {
        "annotations": {"autoscaling.knative.dev/maxScale": "3"}
    }
    annotations = parse_service(document).template.spec.annotations
    assert annotations == {"autoscaling.knative.dev/max-scale": "3"}


def test_a_kubernetes_startup_probe_gives_the_startup_budget() -> None:
    document = minimal()
    document["spec"]["template"]["spec"]["containers"][0]["startupProbe"] = {
        "tcpSocket": {"port": 8080},
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "failureThreshold": 6,
    }
    assert parse_service(document).template.spec.startup_timeout_seconds == 65


def test_a_traffic_target_may_name_the_templates_own_revision() -> None:
    document = minimal()
    document["spec"]["template"]["metadata"] = {"name": "svc-blue"}
    document["spec"]["traffic"] = [{"revisionName": "svc-blue", "percent": 100}]
    manifest = parse_service(document)
    assert manifest.template.name == "svc-blue"
    assert manifest.traffic == (TrafficEntry(100, "svc-blue"),)


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(document)
    target: Any = document
    parts = path.split("/")
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return document


BASE = minimal()
BASE["spec"]["traffic"] = [
    {"latestRevision": True, "percent": 50},
    {"revisionName": "svc-00001-xyz", "percent": 50},
]


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        ("spec/traffic/1/percent", 150, "spec.traffic[1].percent", "must be 0..100"),
        ("spec/traffic/1/percent", 40, "spec.traffic", "sum to 90, want 100"),
        (
            "spec/traffic/1/latestRevision",
            True,
            "spec.traffic[1].latestRevision",
            'may not set revisionName "svc-00001-xyz" when latestRevision is true',
        ),
        (
            "spec/traffic/0/latestRevision",
            False,
            "spec.traffic[0].latestRevision",
            'may not set revisionName "" when latestRevision is false',
        ),
        ("spec/traffic/0/tag", "Bad_Tag", "spec.traffic[0].tag", "invalid tag"),
        ("spec/traffic/0/url", "http://x", "spec.traffic[0].url", "output only"),
        (
            "spec/traffic/0/configurationName",
            "svc",
            "spec.traffic[0].configurationName",
            "not allowed in a Service",
        ),
        ("apiVersion", "serving.knative.dev/v1alpha1", "apiVersion", "must be"),
        ("kind", "Route", "kind", "must be Service"),
        ("metadata/name", "Bad_Name", "metadata.name", "invalid service name"),
        (
            "spec/template/metadata/annotations",
            {"autoscaling.knative.dev/min-scale": "-1"},
            "spec.template.metadata.annotations.autoscaling.knative.dev/min-scale",
            "between 0 and 1000",
        ),
        (
            "spec/template/metadata/annotations",
            {"autoscaling.knative.dev/window": "2s"},
            "spec.template.metadata.annotations.autoscaling.knative.dev/window",
            "between 6s and 3600s",
        ),
        (
            "spec/template/metadata/annotations",
            {"autoscaling.knative.dev/initial-scale": "2"},
            "spec.template.metadata.annotations.autoscaling.knative.dev/initial-scale",
            "not supported",
        ),
        (
            "spec/template/metadata/name",
            "other-v1",
            "spec.template.metadata.name",
            'must have prefix "svc-"',
        ),
        (
            "spec/template/spec/containerConcurrency",
            1001,
            "spec.template.spec.containerConcurrency",
            "must be 1..1000",
        ),
        (
            "spec/template/spec/timeoutSeconds",
            3601,
            "spec.template.spec.timeoutSeconds",
            "must be 1..3600",
        ),
        (
            "spec/template/spec/volumes",
            [{"name": "v", "nfs": {"server": "x", "path": "/"}}],
            "spec.template.spec.volumes[0].nfs",
            "not supported",
        ),
        (
            "spec/template/spec/containers/0/image",
            "gcr.io/p/app:1",
            "spec.template.spec.containers[0].image",
            "not an image pinned to its digest",
        ),
        (
            "spec/template/spec/containers/0/livenessProbe",
            {"grpc": {"port": 9000}},
            "spec.template.spec.containers[0].livenessProbe.grpc.port",
            "must be the container port (8080), got 9000",
        ),
        (
            "spec/template/spec/containers/0/readinessProbe",
            {"httpGet": {"path": "/ready", "port": 9000}},
            "spec.template.spec.containers[0].readinessProbe.httpGet.port",
            "must be the container port (8080), got 9000",
        ),
        (
            "spec/template/spec/containers/0/livenessProbe",
            {"httpGet": {"path": "/"}, "tcpSocket": {}},
            "spec.template.spec.containers[0].livenessProbe",
            "give one of httpGet, tcpSocket, exec, grpc, not httpGet and tcpSocket",
        ),
        (
            "spec/template/spec/containers/0/livenessProbe",
            {"tcpSocket": {}, "successThreshold": 2},
            "spec.template.spec.containers[0].livenessProbe.successThreshold",
            "must be 1",
        ),
        (
            "spec/template/spec/containers/0/startupProbe",
            {"httpGet": {"path": "ready"}},
            "spec.template.spec.containers[0].startupProbe.httpGet.path",
            "must start with '/'",
        ),
        (
            "spec/template/spec/containers/0/workingDir",
            "src",
            "spec.template.spec.containers[0].workingDir",
            "must be an absolute path",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "PORT", "value": "1"}],
            "spec.template.spec.containers[0].env[0].name",
            "PORT is reserved",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "value": 1}],
            "spec.template.spec.containers[0].env[0].value",
            "must be a string",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
            "spec.template.spec.containers[0].env[1].name",
            "defined twice",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
            "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef",
            "config maps are not supported",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "v1"}}}],
            "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.key",
            "must be a number from 1, or 'latest'",
        ),
        (
            "spec/template/spec/containers/0/ports",
            [{"name": "grpc", "containerPort": 8080}],
            "spec.template.spec.containers[0].ports[0].name",
            "h2c (HTTP/2 cleartext",
        ),
        (
            "spec/template/spec/containers/0/resources",
            {"limits": {"cpu": "lots"}},
            "spec.template.spec.containers[0].resources.limits.cpu",
            "not a CPU amount",
        ),
        (
            "spec/template/spec/containers/1",
            {"image": IMAGE},
            "spec.template.spec.containers",
            "sidecars are not supported",
        ),
        ("spec/frobnicate", 1, "spec.frobnicate", "unknown field"),
    ],
)
def test_validation_names_the_field_path(path: str, value: Any, field: str, message: str) -> None:
    document = _set(BASE, path, value) if not path.endswith("containers/1") else _sidecar()
    with pytest.raises(InvalidSpec) as error:
        parse_service(document, where="service.yaml")
    text = str(error.value)
    assert text.startswith("service.yaml is not a valid Knative Service")
    assert f"  {field}: " in text, text
    assert message in text.split(f"  {field}: ", 1)[1].splitlines()[0], text


def _sidecar() -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    document["spec"]["template"]["spec"]["containers"].append({"image": IMAGE})
    return document


def test_every_problem_is_reported_at_once() -> None:
    document = _set(BASE, "spec/traffic/1/percent", 150)
    document = _set(document, "spec/template/spec/timeoutSeconds", 0)
    with pytest.raises(InvalidSpec, match=r"\(3 problems\)") as error:
        parse_service(document)
    assert "spec.template.spec.timeoutSeconds: must be 1..3600" in str(error.value)
    assert "spec.traffic[1].percent: must be 0..100" in str(error.value)
    assert "spec.traffic: traffic targets sum to 200, want 100" in str(error.value)


def test_output_only_fields_are_ignored() -> None:
    document = render_service(service_view(RevisionSpec(source="/s")))
    document["metadata"]["uid"] = "1234"
    document["metadata"]["annotations"]["serving.knative.dev/creator"] = "someone"
    manifest = parse_service(document)
    assert "serving.knative.dev/creator" not in manifest.annotations


def _problems(document: Any) -> dict[str, str]:
    """field path -> message, from the InvalidSpec a document gets."""
    with pytest.raises(InvalidSpec) as error:
        parse_service(document)
    lines = str(error.value).splitlines()[1:]
    return dict(line.strip().split(": ", 1) for line in lines)


CONTAINER = "spec.template.spec.containers[0]"


@pytest.mark.parametrize(
    ("path", "value", "field", "message"),
    [
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "1X"}],
            f"{CONTAINER}.env[2].name",
            "invalid variable name '1X'",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "a/b", "key": "1"}}}],
            f"{CONTAINER}.env[0].valueFrom.secretKeyRef.name",
            "invalid secret name 'a/b'",
        ),
        (
            "spec/template/spec/containers/0/env",
            [{"name": "A", "valueFrom": {"secretKeyRef": {"key": "1"}}}],
            f"{CONTAINER}.env[0].valueFrom.secretKeyRef.name",
            "required: the secret's name",
        ),
        (
            "spec/template/spec/containers/0/ports",
            [{"containerPort": 70000}],
            f"{CONTAINER}.ports[0].containerPort",
            "must be 1..65535, got 70000",
        ),
        (
            "spec/template/spec/containers/0/startupProbe",
            {"tcpSocket": {"port": 9000}},
            f"{CONTAINER}.startupProbe.tcpSocket.port",
            "must be the container port (8080), got 9000",
        ),
        (
            "spec/template/spec/containers/0/startupProbe",
            {"periodSeconds": 0},
            f"{CONTAINER}.startupProbe.periodSeconds",
            "must be 1..3600, got 0",
        ),
        (
            "spec/template/spec/containers/0/command",
            ["python", 3],
            f"{CONTAINER}.command[1]",
            "must be a string (quote it), got 3",
        ),
        (
            "spec/template/spec/containers/0/resources",
            {"limits": {"memory": "lots"}},
            f"{CONTAINER}.resources.limits.memory",
            "not a memory amount",
        ),
        (
            "spec/template/metadata/annotations",
            {"autoscaling.knative.dev/minScale": "5", "autoscaling.knative.dev/maxScale": "2"},
            # The key as the document writes it, though homerun stores min-scale.
            "spec.template.metadata.annotations.autoscaling.knative.dev/minScale",
            "min-scale (5) is above max-scale (2)",
        ),
        ("spec/traffic/1/revisionName", "", "spec.traffic[1].revisionName", "a revision name"),
        ("spec/traffic/0/percent", "50", "spec.traffic[0].percent", "a whole number, got '50'"),
        ("metadata", {"labels": {"a": "b"}}, "metadata.name", "required: the service's name"),
        ("spec/template/spec/containers", [None], f"{CONTAINER}", "required"),
    ],
)
def test_nested_problems_carry_their_field_path(
    path: str, value: Any, field: str, message: str
) -> None:
    problems = _problems(_set(BASE, path, value))
    assert field in problems, problems
    assert message in problems[field]


@pytest.mark.parametrize(
    ("path", "field", "meant"),
    [
        (
            "spec/template/spec/contianerConcurrency",
            "spec.template.spec.contianerConcurrency",
            "containerConcurrency",
        ),
        ("spec/template/spec/containers/0/imgae", f"{CONTAINER}.imgae", "image"),
        ("spec/traffic/0/precent", "spec.traffic[0].precent", "percent"),
        ("metadata/lables", "metadata.lables", "labels"),
        ("apiversion", "apiversion", "apiVersion"),
    ],
)
def test_a_misspelled_field_says_what_was_meant(path: str, field: str, meant: str) -> None:
    problems = _problems(_set(BASE, path, 1))
    assert problems[field] == f"unknown field; did you mean {meant!r}?"


def test_an_unknown_field_lists_the_fields_there() -> None:
    problems = _problems(_set(BASE, "spec/template/spec/containers/0/ports", [{"xyz": 1}]))
    assert problems[f"{CONTAINER}.ports[0].xyz"] == (
        "unknown field; the fields here are containerPort, name, protocol"
    )


def test_a_refused_field_gives_the_reason_not_a_guess() -> None:
    problems = _problems(
        _set(BASE, "spec/template/spec/containers/0/securityContext", {"privileged": True})
    )
    assert problems[f"{CONTAINER}.securityContext.privileged"] == (
        "not supported: instances are never privileged (false is allowed)"
    )
    problems = _problems(_set(BASE, "spec/template/spec/securityContext", {"runAsUser": 1}))
    assert problems["spec.template.spec.securityContext.runAsUser"].startswith(
        "not supported: give runAsUser, runAsGroup and runAsNonRoot in the container's"
    )


def test_the_containers_user_is_read_and_rendered_back() -> None:
    security = {"runAsUser": 2020, "runAsGroup": 2021, "runAsNonRoot": True}
    document = _set(BASE, "spec/template/spec/containers/0/securityContext", security)
    spec = parse_service(document).template.spec
    assert (spec.run_as_user, spec.run_as_group, spec.run_as_non_root) == (2020, 2021, True)
    rendered = render_service(service_view(spec))
    assert rendered["spec"]["template"]["spec"]["containers"][0]["securityContext"] == security


# The restricted Pod Security Standard, as Knative's secure-pod-defaults writes it.
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    "seccompProfile": {"type": "RuntimeDefault"},
    "runAsNonRoot": True,
    "runAsUser": 1000,
}


def test_a_restricted_security_context_is_read_and_rendered_back() -> None:
    document = _set(BASE, "spec/template/spec/containers/0/securityContext", RESTRICTED)
    spec = parse_service(document).template.spec
    assert spec.allow_privilege_escalation is False and spec.read_only_root_filesystem is True
    assert (spec.capabilities_drop, spec.capabilities_add) == (["ALL"], ["NET_BIND_SERVICE"])
    assert spec.seccomp_profile == "RuntimeDefault"
    rendered = render_service(service_view(spec))
    assert rendered["spec"]["template"]["spec"]["containers"][0]["securityContext"] == RESTRICTED
    # privileged: false is what every instance is; Knative allows it, and so does homerun.
    unprivileged = _set(
        document, "spec/template/spec/containers/0/securityContext/privileged", False
    )
    assert parse_service(unprivileged).template.spec == spec


def test_the_pods_seccomp_profile_holds_where_the_container_gives_none() -> None:
    pod = _set(
        BASE, "spec/template/spec/securityContext", {"seccompProfile": {"type": "Unconfined"}}
    )
    assert parse_service(pod).template.spec.seccomp_profile == "Unconfined"
    both = _set(
        pod, "spec/template/spec/containers/0/securityContext/seccompProfile/type", "RuntimeDefault"
    )
    assert parse_service(both).template.spec.seccomp_profile == "RuntimeDefault"


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        (
            {"capabilities": {"add": ["SYS_ADMIN"]}},
            "securityContext.capabilities.add[0]",
            "'SYS_ADMIN' cannot be added: an instance gets no capability beyond its runtime's",
        ),
        (
            {"capabilities": {"drop": ["CAP_NET_RAW"]}},
            "securityContext.capabilities.drop[0]",
            "'CAP_NET_RAW' is not a Linux capability as Kubernetes names them (e.g. NET_RAW, or "
            "ALL); write NET_RAW",
        ),
        (
            {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            "securityContext.seccompProfile.type",
            "not supported: a Localhost profile is a file on the node",
        ),
        (
            {"seccompProfile": {"type": "Strict"}},
            "securityContext.seccompProfile.type",
            "'Strict' is not a seccomp profile type; write RuntimeDefault",
        ),
    ],
)
def test_privileges_homerun_does_not_give_are_refused_at_their_field(
    value: dict[str, Any], field: str, message: str
) -> None:
    problems = _problems(_set(BASE, "spec/template/spec/containers/0/securityContext", value))
    assert problems[f"{CONTAINER}.{field}"].startswith(message), problems


def test_capability_names_are_read_in_any_case_and_once() -> None:
    document = _set(
        BASE, "spec/template/spec/containers/0/securityContext/capabilities", {"drop": ["all"]}
    )
    assert parse_service(document).template.spec.capabilities_drop == ["ALL"]
    both = {"add": ["NET_BIND_SERVICE"], "drop": ["net_bind_service"]}
    problems = _problems(
        _set(BASE, "spec/template/spec/containers/0/securityContext/capabilities", both)
    )
    assert problems[f"{CONTAINER}.securityContext.capabilities.add"] == (
        "NET_BIND_SERVICE both added and dropped; name each capability in one list"
    )
    with pytest.raises(InvalidSpec, match="NET_BIND_SERVICE both added and dropped"):
        RevisionSpec(
            source="/s",
            capabilities_add=["NET_BIND_SERVICE"],
            capabilities_drop=["NET_BIND_SERVICE"],
        ).check()


def test_an_added_capability_is_refused_past_the_documents_checks_too() -> None:
    # The revision's own model holds the rule, for a spec that comes another way (the API).
    with pytest.raises(ValidationError, match="'SYS_ADMIN' cannot be added"):
        RevisionSpec(source="/s", capabilities_add=["SYS_ADMIN"])
    with pytest.raises(ValidationError, match="'NET_RAWW' is not a Linux capability"):
        RevisionSpec(source="/s", capabilities_drop=["NET_RAWW"])


def test_a_service_as_a_cluster_stores_it_is_read() -> None:
    # Knative's webhook writes its defaults into the Service: enableServiceLinks false (no
    # variables for other services, as homerun), the container's name, a TCP readiness probe
    # on port 0 (the container port), empty resources.
    stored = _set(BASE, "spec/template/spec/enableServiceLinks", False)
    stored = _set(stored, "spec/template/spec/containers/0/name", "user-container")
    stored = _set(
        stored,
        "spec/template/spec/containers/0/readinessProbe",
        {"successThreshold": 1, "tcpSocket": {"port": 0}},
    )
    stored = _set(stored, "spec/template/spec/containers/0/resources", {})
    # Knative's default concurrency, 0 (unlimited there): Cloud Run reads 0 as not given.
    stored = _set(stored, "spec/template/spec/containerConcurrency", 0)
    spec = parse_service(stored).template.spec
    assert spec.container_name == "user-container"
    assert spec.readiness_probe is not None
    assert spec.container_concurrency == DEFAULT_CONCURRENCY
    problems = _problems(_set(BASE, "spec/template/spec/enableServiceLinks", True))
    assert problems["spec.template.spec.enableServiceLinks"].startswith(
        "not supported: homerun gives an instance no variables for other services"
    )


def test_root_with_run_as_non_root_is_refused_at_its_field() -> None:
    security = {"runAsUser": 0, "runAsNonRoot": True}
    problems = _problems(_set(BASE, "spec/template/spec/containers/0/securityContext", security))
    assert problems[f"{CONTAINER}.securityContext.runAsUser"] == (
        "0 is root, and runAsNonRoot is true: give another user id"
    )
    negative = _set(BASE, "spec/template/spec/containers/0/securityContext", {"runAsUser": -1})
    assert f"{CONTAINER}.securityContext.runAsUser" in _problems(negative)


def test_probes_read_as_knative_writes_them() -> None:
    container = "spec/template/spec/containers/0"
    document = _set(
        BASE,
        f"{container}/readinessProbe",
        {
            "httpGet": {"path": "/ready", "httpHeaders": [{"name": "X-A", "value": "1"}]},
            "periodSeconds": 0,
            "successThreshold": 2,
        },
    )
    document = _set(document, f"{container}/livenessProbe", {"exec": {"command": ["true"]}})
    document = _set(
        document,
        f"{container}/startupProbe",
        {"httpGet": {"path": "/started", "port": 8080}, "periodSeconds": 1, "failureThreshold": 30},
    )
    spec = parse_service(document).template.spec
    assert spec.readiness_probe == Probe(
        action=ProbeAction.HTTP,
        path="/ready",
        headers=(("X-A", "1"),),
        period_seconds=0,
        success_threshold=2,
    )
    assert spec.liveness_probe == Probe(action=ProbeAction.EXEC, command=("true",))
    assert spec.startup_probe == Probe(
        action=ProbeAction.HTTP, path="/started", period_seconds=1, failure_threshold=30
    )
    assert spec.startup_timeout_seconds == 30


def test_requests_and_working_dir_are_recorded() -> None:
    container = "spec/template/spec/containers/0"
    document = _set(BASE, f"{container}/resources", {"requests": {"cpu": "250m", "memory": "64Mi"}})
    document = _set(document, f"{container}/workingDir", "/app/src")
    spec = parse_service(document).template.spec
    assert (spec.cpu_request, spec.memory_request, spec.working_dir) == ("250m", "64Mi", "/app/src")


def test_a_null_traffic_target_is_a_problem_not_a_missing_share() -> None:
    document = copy.deepcopy(BASE)
    document["spec"]["traffic"][0] = None
    assert _problems(document) == {"spec.traffic[0]": "required"}


def test_numbers_written_where_kubernetes_takes_strings_are_read_as_text() -> None:
    document = _set(minimal(), "spec/template/spec/containers/0/resources", {"limits": {"cpu": 2}})
    document = _set(
        document,
        "spec/template/spec/containers/0/env",
        [{"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": 3}}}],
    )
    spec = parse_service(document).template.spec
    assert spec.cpu == "2"
    assert spec.secrets == {"DB": SecretRef(secret="db", version="3")}


# -- volumes: secret files and in-memory volumes ----------------------------------------------

CLOUD_RUN_VOLUMES = {
    "volumes": [
        {
            "name": "api",
            "secret": {
                "secretName": "api-key",
                "items": [{"key": "latest", "path": "api-key"}, {"key": 2, "path": "v2"}],
            },
        },
        {"name": "tls", "secret": {"secretName": "tls"}},
        {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ],
}
MOUNTS = [
    {"name": "api", "mountPath": "/secrets", "readOnly": True},
    {"name": "tls", "mountPath": "/etc/tls"},
    {"name": "cache", "mountPath": "/cache"},
]


def _with_volumes(volumes: Any, mounts: Any) -> dict[str, Any]:
    document = minimal(volumes=volumes)
    document["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = mounts
    return document


def test_cloud_run_volumes_are_read_as_secret_files_and_in_memory_volumes() -> None:
    spec = parse_service(_with_volumes(CLOUD_RUN_VOLUMES["volumes"], MOUNTS)).template.spec
    assert spec.secret_files == {
        "/secrets/api-key": SecretRef(secret="api-key", version="latest"),
        "/secrets/v2": SecretRef(secret="api-key", version="2"),
        # No items: one file named after the secret, its latest version (Cloud Run's rule).
        "/etc/tls/tls": SecretRef(secret="tls", version="latest"),
    }
    assert spec.volumes == {"cache": MemoryVolume(size_limit="64Mi")}
    assert spec.volume_mounts == {"/cache": "cache"}


def test_volumes_round_trip() -> None:
    spec = parse_service(_with_volumes(CLOUD_RUN_VOLUMES["volumes"], MOUNTS)).template.spec
    rendered = render_template(spec, IMAGE)
    container = rendered["spec"]["containers"][0]
    assert {mount["mountPath"] for mount in container["volumeMounts"]} == {
        "/secrets",
        "/etc/tls",
        "/cache",
    }
    assert {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in rendered[
        "spec"
    ]["volumes"]
    document = minimal()
    document["spec"]["template"] = rendered
    assert parse_service(document).template.spec == spec


@pytest.mark.parametrize(
    ("volumes", "mounts", "field", "message"),
    [
        (
            [{"name": "c", "emptyDir": {"medium": "Memory"}}],
            [{"name": "d", "mountPath": "/c"}],
            f"{CONTAINER}.volumeMounts[0].name",
            "no volume named 'd'",
        ),
        (
            [{"name": "c", "emptyDir": {}}],
            [],
            "spec.template.spec.volumes[0].emptyDir.medium",
            "required",
        ),
        (
            [{"name": "c", "emptyDir": {"medium": "Disk"}}],
            [],
            "spec.template.spec.volumes[0].emptyDir.medium",
            "homerun's emptyDir volumes are in memory",
        ),
        (
            [{"name": "s", "secret": {"secretName": "s"}}],
            [],
            "spec.template.spec.volumes[0]",
            "secret volume s is not mounted",
        ),
        (
            [{"name": "s", "secret": {"secretName": "s"}}],
            [{"name": "s", "mountPath": "/s", "readOnly": False}],
            f"{CONTAINER}.volumeMounts[0].readOnly",
            "a secret volume is read-only",
        ),
        (
            [{"name": "s", "secret": {"secretName": "s", "items": [{"key": "1", "path": "a/b"}]}}],
            [{"name": "s", "mountPath": "/s"}],
            "spec.template.spec.volumes[0].secret.items[0].path",
            "must be a file name",
        ),
        (
            [{"name": "s", "secret": {"secretName": "s"}}],
            [{"name": "s", "mountPath": "/proc/s"}],
            f"{CONTAINER}.volumeMounts[0].mountPath",
            "Cloud Run does not mount volumes at /dev",
        ),
        (
            [{"name": "s", "configMap": {"name": "x"}}],
            [],
            "spec.template.spec.volumes[0].configMap",
            "config maps are not supported",
        ),
        (
            [{"name": "s"}],
            [],
            "spec.template.spec.volumes[0]",
            "expected exactly one of secret, emptyDir",
        ),
    ],
)
def test_bad_volumes_name_their_field(volumes: Any, mounts: Any, field: str, message: str) -> None:
    problems = _problems(_with_volumes(volumes, mounts))
    assert field in problems, problems
    assert message in problems[field]


def test_a_secret_volume_at_a_folder_another_volume_uses_is_refused() -> None:
    volumes = [
        {"name": "s", "secret": {"secretName": "s"}},
        {"name": "c", "emptyDir": {"medium": "Memory"}},
    ]
    mounts = [{"name": "s", "mountPath": "/data"}, {"name": "c", "mountPath": "/data"}]
    with pytest.raises(InvalidSpec, match="both mounted at /data"):
        parse_service(_with_volumes(volumes, mounts))


# -- any input: a manifest or InvalidSpec, never another exception (hypothesis) ------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    document = copy.deepcopy(document)
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return document


RICH = render_service(
    service_view(
        RevisionSpec(
            source="/src/app",
            command=["python"],
            args=["main.py"],
            env={"A": "1"},
            secrets={"DB": SecretRef(secret="db", version="2")},
            annotations={"autoscaling.knative.dev/max-scale": "5"},
            cpu="1",
            memory="512Mi",
            container_port=8080,
        )
    )
)


@settings(max_examples=300)
@given(st.data())
def test_any_change_to_a_valid_document_parses_or_names_the_field(data: st.DataObject) -> None:
    """A valid Service with one subtree replaced by anything: the parser accepts it or says
    what is wrong (InvalidSpec), and never fails any other way."""
    base = data.draw(st.sampled_from([RICH, BASE, minimal()]))
    path = data.draw(st.sampled_from(_paths(base)))
    document = _replaced(base, path, data.draw(json_values))
    try:
        manifest = parse_service(document)
    except InvalidSpec as error:
        assert str(error)
        return
    assert manifest.name


@given(json_values)
def test_any_document_at_all_parses_or_is_refused(document: Any) -> None:
    try:
        parse_service(document)
    except InvalidSpec:
        pass
