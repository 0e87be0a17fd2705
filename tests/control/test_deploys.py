"""Deploys applied by the control plane over a fake runtime: what serves after each outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from homerun.model.events import BuildLine, Done, Phase, Starting
from homerun.model.states import RevisionStatus
from homerun.routing.types import Route, RouteError
from homerun.traffic import TrafficUpdate

from .conftest import Plane, run


def routed(plane: Plane, host: str) -> str | None:
    route = plane.control.live.resolve(host)
    return route.revision if isinstance(route, Route) else None


def test_a_new_service_serves_its_first_revision_once_it_listens(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        done = await plane.deployed("svc", source=str(plane.source))
        assert done.percent == 100 and done.url == "http://svc.localhost:8080"
        assert plane.store.revision(done.revision).status == RevisionStatus.READY
        assert routed(plane, "svc.localhost:8080") == done.revision
        artifact = plane.store.revision(done.revision).artifact
        assert artifact is not None and artifact.digest

    run(make_plane, scenario)


def test_the_deploy_reports_its_phases_in_order(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        events = await plane.deploy("svc", source=str(plane.source))
        phases = [event.message for event in events if isinstance(event, Phase)]
        assert phases[0].startswith("Building revision svc-00001-")
        assert phases[1] == "Entrypoint (a test): python app.py"
        assert phases[2].startswith("Starting revision svc-00001-")
        assert not [event for event in events if isinstance(event, BuildLine)]

    run(make_plane, scenario)


def test_a_failed_start_leaves_the_traffic_where_it_was(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        plane.runtime.fail = True
        failed = await plane.failed("svc", env={"update": {"A": "1"}})
        assert f"{first.revision} keeps serving" in failed.message
        assert "No module named 'flask'" in failed.message
        assert routed(plane, "svc.localhost:8080") == first.revision
        statuses = [revision.status for revision in plane.store.revisions("svc")]
        assert statuses == [RevisionStatus.FAILED, RevisionStatus.READY]

    run(make_plane, scenario)


def test_an_unchanged_update_makes_no_revision(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        again = await plane.deployed("svc")
        assert again.unchanged and again.revision == first.revision
        assert len(plane.store.revisions("svc")) == 1

    run(make_plane, scenario)


def test_an_env_change_copies_the_artifact_and_moves_the_traffic(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        events = await plane.deploy("svc", env={"update": {"A": "1"}})
        second = events[-1]
        assert isinstance(second, Done), second
        messages = [event.message for event in events if isinstance(event, Phase)]
        assert f"from the artifact of {first.revision} (no rebuild)" in messages[0]
        assert routed(plane, "svc.localhost:8080") == second.revision

    run(make_plane, scenario)


def test_no_traffic_keeps_the_old_revision_serving_and_tags_the_new(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        second = await plane.deployed(
            "svc", env={"update": {"A": "2"}}, no_traffic=True, tag="canary"
        )
        assert second.percent == 0
        assert second.tag_urls == {"canary": "http://canary---svc.localhost:8080"}
        assert routed(plane, "svc.localhost:8080") == first.revision
        assert routed(plane, "canary---svc.localhost:8080") == second.revision

    run(make_plane, scenario)


def test_unknown_hosts_and_services_without_a_ready_revision(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        assert plane.control.live.resolve("nothing.localhost") == RouteError(
            404, "no service answers at nothing.localhost"
        )
        plane.runtime.fail = True
        await plane.failed("svc", source=str(plane.source))
        answer = plane.control.live.resolve("svc.localhost:8080")
        assert answer == RouteError(503, "service svc has no ready revision")

    run(make_plane, scenario)


def test_a_starting_revision_survives_routing_changes_elsewhere(
    make_plane: Callable[..., Plane],
) -> None:
    """The newcomer issue's lost deploy: while a slow app starts, another service deploys,
    changes its traffic and deletes a revision; the starting instance is left alone."""

    async def scenario(plane: Plane) -> None:
        await plane.deployed("other", source=str(plane.source))
        hold = plane.runtime.hold = asyncio.Event()
        plane.runtime.a_start.clear()
        slow = asyncio.ensure_future(plane.deploy("slow", source=str(plane.source)))
        await plane.runtime.a_start.wait()
        instance = plane.runtime.started[1]
        plane.runtime.hold = None
        second = await plane.deployed("other", env={"update": {"A": "1"}})
        plane.control.traffic.update("other", TrafficUpdate(to_latest=True))
        await plane.deployed("other", env={"update": {"A": "2"}})
        await plane.control.revisions.delete(second.revision)
        await asyncio.sleep(0.02)  # some Starting events while it waits
        hold.set()
        events = await slow
        done = events[-1]
        assert isinstance(done, Done), done
        starting = [event for event in events if isinstance(event, Starting)]
        assert starting and starting[0].revision == done.revision
        assert instance.signals == [] and instance.returncode is None
        assert routed(plane, "slow.localhost:8080") == done.revision

    run(make_plane, scenario)


def test_a_failure_names_the_entrypoint_flags_kept_from_an_earlier_deploy(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("svc", source=str(plane.source), args=["--workers", "2"])
        plane.runtime.fail = True
        failed = await plane.failed("svc", env={"update": {"A": "1"}})
        assert "This revision runs --args --workers,2 from an earlier deploy of svc" in (
            failed.message
        )
        assert "homerun services update svc --args=''" in failed.message
        assert "Hint: the app imports flask, which is not installed" in failed.message

    run(make_plane, scenario)


def test_a_missing_program_fails_the_deploy_and_the_revision(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        plane.runtime.unstartable = FileNotFoundError(2, "No such file or directory")
        failed = await plane.failed("svc", source=str(plane.source))
        expected = "the app could not be started: python: No such file or directory"
        assert expected in failed.message
        assert [r.status for r in plane.store.revisions("svc")] == [RevisionStatus.FAILED]

    run(make_plane, scenario)


def test_a_revision_recorded_without_a_digest_gets_it_at_restore_off_the_loop(
    make_plane: Callable[..., Plane],
) -> None:
    """Revisions built before digests existed are hashed in a thread after a restart, not by
    the first describe or deploy on the event loop."""

    async def scenario(plane: Plane) -> None:
        done = await plane.deployed("svc", source=str(plane.source))
        artifact = plane.store.revision(done.revision).artifact
        assert artifact is not None and artifact.digest
        plane.store.set_artifact(done.revision, artifact.model_copy(update={"digest": None}))
        await plane.control.restore()
        for _ in range(200):  # the task hashes in a thread
            filled = plane.store.revision(done.revision).artifact
            if filled is not None and filled.digest:
                break
            await asyncio.sleep(0.01)
        assert filled is not None and filled.digest == artifact.digest

    run(make_plane, scenario)


def test_the_hosts_file_follows_services_and_tags(make_plane: Callable[..., Plane]) -> None:
    """Instances resolve service hosts from it (runtime/_site): rewritten as services and
    tags are added, and named in every instance's environment."""

    async def scenario(plane: Plane) -> None:
        hosts = plane.control.live.hosts_file
        first = await plane.deployed("svc", source=str(plane.source))
        env = plane.control.live.units[first.revision].plan.env
        assert env["HOMERUN_HOSTS"] == str(hosts)
        assert env["PYTHONPATH"].endswith("/homerun/runtime/_site")
        assert "127.0.0.1\tsvc.localhost\n" in hosts.read_text()
        await plane.deployed("svc", env={"update": {"A": "2"}}, no_traffic=True, tag="canary")
        await plane.deployed("api", source=str(plane.source))
        assert "127.0.0.1\tapi.localhost svc.localhost canary---svc.localhost\n" in (
            hosts.read_text()
        )

    run(make_plane, scenario)


def test_labels_description_and_revision_suffix(make_plane: Callable[..., Plane]) -> None:
    """gcloud's --labels (added to the service's), --description and --revision-suffix."""

    async def scenario(plane: Plane) -> None:
        first = await plane.deployed(
            "svc", source=str(plane.source), update_labels={"team": "web"},
            description="the shop's front", revision_suffix="v1",
        )  # fmt: skip
        assert first.revision == "svc-v1"
        record = plane.store.service("svc")
        assert record.labels == {"team": "web"}
        assert record.annotations["run.googleapis.com/description"] == "the shop's front"
        knative = plane.control.views.knative_service("svc")
        assert knative["metadata"]["labels"]["team"] == "web"
        # Labels alone make no revision; they are added to the service's.
        same = await plane.deployed("svc", update_labels={"env": "prod"})
        assert same.unchanged and same.revision == "svc-v1"
        assert "labels and description set" in same.service_changes
        assert plane.store.service("svc").labels == {"team": "web", "env": "prod"}
        # A new suffix is a new revision, even with the same settings; a taken one is refused.
        second = await plane.deployed("svc", revision_suffix="v2")
        assert second.revision == "svc-v2" and not second.unchanged
        refused = await plane.failed("svc", env={"update": {"A": "1"}}, revision_suffix="v1")
        assert "revision svc-v1 already exists" in refused.message
        assert plane.store.latest_ready("svc").name == "svc-v2"  # type: ignore[union-attr]
        bad = await plane.failed("svc", revision_suffix="-V")
        assert "--revision-suffix: '-V'" in bad.message

    run(make_plane, scenario)
