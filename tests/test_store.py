from pathlib import Path

import pytest

from homerun.errors import NotFound
from homerun.spec import RevisionSpec
from homerun.store import FAILED, READY, STARTING, Store, TrafficEntry


def test_revisions_traffic_and_restart_survive_on_disk(tmp_path: Path) -> None:
    database = tmp_path / "homerun.db"
    store = Store(database)
    spec = RevisionSpec(source="/src", env={"A": "1"})
    assert store.next_seq("svc") == 1
    first = store.create_revision("svc", "svc-00001-abc", 1, spec, {"argv": ["x"]}, True)
    assert first.status == STARTING and first.spec == spec and first.artifact == {"argv": ["x"]}
    assert store.next_seq("svc") == 2
    store.set_revision_status(first.name, READY)
    store.set_traffic("svc", [TrafficEntry(percent=100, latest=True)])
    second = store.create_revision("svc", "svc-00002-def", 2, spec, {}, None)
    store.set_revision_status(second.name, FAILED, "boom")
    store.close()

    reopened = Store(database)
    service = reopened.service("svc")
    assert service.allow_unauthenticated is True
    assert service.traffic == (TrafficEntry(percent=100, latest=True),)
    assert reopened.latest_ready("svc").name == "svc-00001-abc"  # type: ignore[union-attr]
    assert [r.name for r in reopened.revisions("svc")] == ["svc-00002-def", "svc-00001-abc"]
    assert reopened.revision("svc-00002-def").message == "boom"


def test_unfinished_revisions_are_failed_after_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "homerun.db")
    store.create_revision("svc", "svc-00001-abc", 1, RevisionSpec(source="/s"), {}, None)
    assert store.fail_unfinished_revisions("daemon stopped") == ["svc-00001-abc"]
    assert store.revision("svc-00001-abc").status == FAILED


def test_delete_and_not_found(tmp_path: Path) -> None:
    store = Store(tmp_path / "homerun.db")
    store.create_revision("svc", "svc-00001-abc", 1, RevisionSpec(source="/s"), {}, None)
    store.record_instance("svc-00001-abc-aaaaaa", "svc-00001-abc", 123, 456)
    assert store.leftover_instances() == [("svc-00001-abc-aaaaaa", 123, 456)]
    deleted = store.delete_service("svc")
    assert [r.name for r in deleted] == ["svc-00001-abc"]
    with pytest.raises(NotFound, match="homerun services list"):
        store.service("svc")
    with pytest.raises(NotFound):
        store.revision("svc-00001-abc")


def test_generation_metadata_and_revision_deletes(tmp_path: Path) -> None:
    store = Store(tmp_path / "homerun.db")
    spec = RevisionSpec(source="/s")
    store.create_revision("svc", "svc-00001-abc", 1, spec, {}, None)
    assert store.service("svc").generation == 1
    store.create_revision("svc", "svc-00002-def", 2, spec, {}, None)
    assert store.service("svc").generation == 2  # a new template
    store.set_traffic("svc", [TrafficEntry(percent=100, latest=True)])
    store.set_traffic("svc", [TrafficEntry(percent=100, latest=True)])  # no change
    assert store.service("svc").generation == 3
    store.set_metadata("svc", {"team": "web"}, {"a": "b"})
    record = store.service("svc")
    assert (record.labels, record.annotations, record.generation) == (
        {"team": "web"},
        {"a": "b"},
        4,
    )
    assert store.latest_created("svc").name == "svc-00002-def"  # type: ignore[union-attr]
    store.delete_revision("svc-00002-def")
    assert not store.has_revision("svc-00002-def")
    assert store.latest_created("svc").name == "svc-00001-abc"  # type: ignore[union-attr]
