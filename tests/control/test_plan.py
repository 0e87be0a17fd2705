"""Deploy plans: what a deploy or `services replace` will do, decided without I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from homerun.control.plan import (
    Build,
    NewRevision,
    NoChange,
    ReplaceFacts,
    Reuse,
    TrafficAfter,
    plan_deploy,
    plan_replace,
)
from homerun.errors import InvalidSpec, NotFound
from homerun.knative import ServiceManifest, TemplateManifest
from homerun.model.states import RevisionStatus
from homerun.spec import DeployRequest, RevisionChanges, RevisionSpec
from homerun.store import RevisionRecord
from homerun.traffic import TrafficEntry


def revision(name: str, spec: RevisionSpec, status: str = "ready") -> RevisionRecord:
    return RevisionRecord(name, "svc", 1, spec, RevisionStatus(status), "", 0.0, 1.0)


def request(**changes: Any) -> DeployRequest:
    options = {key: changes.pop(key) for key in ("tag", "no_traffic") if key in changes}
    return DeployRequest(service="svc", changes=RevisionChanges(**changes), **options)


BASE = revision("svc-00001-abc", RevisionSpec(source="/src"))


def test_a_new_service_is_built_from_its_source() -> None:
    plan = plan_deploy(request(source="/src"), None, None)
    assert isinstance(plan, NewRevision)
    assert plan.artifact == Build(Path("/src"))
    assert plan.traffic == TrafficAfter()


def test_a_new_service_without_source_is_not_found_and_says_how_to_deploy_it() -> None:
    with pytest.raises(NotFound, match=r"homerun deploy svc --source DIR"):
        plan_deploy(request(), None, None)


def test_flags_that_change_nothing_plan_no_revision() -> None:
    plan = plan_deploy(request(tag="blue"), BASE, BASE)
    assert plan == NoChange("svc", BASE, tag="blue")


def test_settings_reuse_the_artifact_and_an_entrypoint_change_rebuilds() -> None:
    settings = plan_deploy(request(env={"update": {"A": "1"}}), BASE, BASE)
    assert isinstance(settings, NewRevision) and settings.artifact == Reuse(BASE)
    entrypoint = plan_deploy(request(args=["--debug"]), BASE, BASE)
    assert isinstance(entrypoint, NewRevision) and isinstance(entrypoint.artifact, Build)
    assert "the entrypoint changes" in entrypoint.artifact.reason


def test_a_function_target_base_image_or_google_variable_change_rebuilds() -> None:
    for changes in (
        {"annotations": {"run.googleapis.com/build-function-target": "hello_http"}},
        {"annotations": {"run.googleapis.com/build-base-image": "python312"}},
        {"env": {"update": {"GOOGLE_FUNCTION_TARGET": "hello_http"}}},
        {"env": {"update": {"GOOGLE_FUNCTION_SIGNATURE_TYPE": "cloudevent"}}},
    ):
        plan = plan_deploy(request(**changes), BASE, BASE)
        assert isinstance(plan, NewRevision) and isinstance(plan.artifact, Build), changes
        assert "--function, --base-image or a GOOGLE_* variable" in plan.artifact.reason


def test_no_traffic_pins_latest_to_the_revision_serving_now() -> None:
    plan = plan_deploy(request(env={"update": {"A": "1"}}, no_traffic=True, tag="new"), BASE, BASE)
    assert isinstance(plan, NewRevision)
    after = plan.traffic.apply((), "svc-00002-def")
    assert after == (
        TrafficEntry(percent=100, revision="svc-00001-abc"),
        TrafficEntry(percent=0, revision="svc-00002-def", tag="new"),
    )


def test_no_traffic_needs_a_revision_to_keep_it() -> None:
    with pytest.raises(InvalidSpec, match="--no-traffic: svc has no ready revision"):
        plan_deploy(request(source="/src", no_traffic=True), None, None)


def manifest(spec: RevisionSpec, *, name: str | None = None, digest: str = "d1") -> ServiceManifest:
    template = TemplateManifest(name=name, spec=spec, digest=digest, source=None)
    traffic = (TrafficEntry(percent=100, latest=True),)
    return ServiceManifest("svc", {}, {}, template, traffic)


def facts(**overrides: Any) -> ReplaceFacts:
    given: dict[str, Any] = dict(
        base=BASE, base_digest="d1", named=None, named_digest=None,
        statuses={BASE.name: "ready"}, next_name="svc-00002-xyz", origin=None,
    )  # fmt: skip
    given.update(overrides)
    return ReplaceFacts(**given)


def test_replace_with_the_same_template_only_applies_traffic_and_metadata() -> None:
    plan = plan_replace(manifest(RevisionSpec(source="/src")), facts())
    assert isinstance(plan, NoChange) and plan.traffic is not None


def test_replace_reuses_an_artifact_with_the_digest_asked_for() -> None:
    changed = RevisionSpec(source="/src", env={"A": "1"})
    plan = plan_replace(manifest(changed), facts(origin=BASE))
    assert isinstance(plan, NewRevision)
    assert plan.artifact == Reuse(BASE) and plan.name == "svc-00002-xyz"


def test_replace_without_a_known_digest_or_source_says_which_field() -> None:
    changed = RevisionSpec(source="", env={"A": "1"})
    with pytest.raises(InvalidSpec, match=r"^spec\.template\.spec\.containers\[0\]\.image"):
        plan_replace(manifest(changed, digest="other"), facts(base=None, statuses={}))


def test_replace_refuses_a_taken_revision_name_with_another_template() -> None:
    changed = RevisionSpec(source="/src", env={"A": "1"})
    with pytest.raises(InvalidSpec, match=r"^spec\.template\.metadata\.name"):
        plan_replace(manifest(changed, name=BASE.name), facts(named=BASE, named_digest="d1"))
