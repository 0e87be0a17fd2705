import sqlite3
from pathlib import Path

import pytest

from homerun import store as store_module
from homerun.errors import NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.states import RevisionStatus
from homerun.spec import RevisionSpec
from homerun.store import Store, TrafficEntry

STARTING, READY, FAILED = RevisionStatus.STARTING, RevisionStatus.READY, RevisionStatus.FAILED

EMPTY = ArtifactRecord(argv=[], env={})
ARTIFACT_X = ArtifactRecord(argv=["x"], env={})


def test_revisions_traffic_and_restart_survive_on_disk(tmp_path: Path) -> None:
    database = tmp_path / "homerun.db"
    store = Store(database)
    spec = RevisionSpec(source="/src", env={"A": "1"})
    assert store.next_seq("svc") == 1
    first = store.create_revision("svc", "svc-00001-abc", 1, spec, ARTIFACT_X, True)
    assert first.status == STARTING and first.spec == spec and first.artifact == ARTIFACT_X
    assert store.next_seq("svc") == 2
    store.set_revision_status(first.name, READY)
    store.set_traffic("svc", [TrafficEntry(percent=100, latest=True)])
    second = store.create_revision("svc", "svc-00002-def", 2, spec, EMPTY, None)
    store.set_revision_status(second.name, FAILED, "boom")
    store.close()

    reopened = Store(database)
    service = reopened.service("svc")
    assert service.allow_unauthenticated is True
    assert service.traffic == (TrafficEntry(percent=100, latest=True),)
    latest_ready = reopened.latest_ready("svc")
    assert latest_ready is not None and latest_ready.name == "svc-00001-abc"
    assert [r.name for r in reopened.revisions("svc")] == ["svc-00002-def", "svc-00001-abc"]
    assert reopened.revision("svc-00002-def").message == "boom"


def test_unfinished_revisions_are_failed_after_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "homerun.db")
    store.create_revision("svc", "svc-00001-abc", 1, RevisionSpec(source="/s"), EMPTY, None)
    assert store.fail_unfinished_revisions("daemon stopped") == ["svc-00001-abc"]
    assert store.revision("svc-00001-abc").status == FAILED


def test_delete_and_not_found(tmp_path: Path) -> None:
    store = Store(tmp_path / "homerun.db")
    store.create_revision("svc", "svc-00001-abc", 1, RevisionSpec(source="/s"), EMPTY, None)
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
    store.create_revision("svc", "svc-00001-abc", 1, spec, EMPTY, None)
    assert store.service("svc").generation == 1
    store.create_revision("svc", "svc-00002-def", 2, spec, EMPTY, None)
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
    latest = store.latest_created("svc")
    assert latest is not None and latest.name == "svc-00002-def"
    store.delete_revision("svc-00002-def")
    assert not store.has_revision("svc-00002-def")
    latest = store.latest_created("svc")
    assert latest is not None and latest.name == "svc-00001-abc"


def test_invoker_bindings_and_ingress(tmp_path: Path) -> None:
    store = Store(tmp_path / "homerun.db")
    spec = RevisionSpec(source="/s")
    store.create_revision("priv", "priv-00001-abc", 1, spec, EMPTY, None)
    assert store.service("priv").allow_unauthenticated is False  # new: private by default
    assert store.service("priv").ingress == "all"
    store.create_revision("pub", "pub-00001-abc", 1, spec, EMPTY, True, "internal")
    assert store.service("pub").allow_unauthenticated is True
    assert store.service("pub").ingress == "internal"
    assert store.members("pub") == {"allUsers"}

    assert store.add_member("priv", "roles/run.invoker", "user:alice") is True
    assert store.add_member("priv", "roles/run.invoker", "user:alice") is False
    assert store.members("priv") == {"user:alice"}
    store.set_access("priv", True, None)
    assert store.service("priv").allow_unauthenticated is True
    store.set_access("priv", False, "internal")
    assert store.members("priv") == {"user:alice"}
    assert store.service("priv").ingress == "internal"
    assert store.remove_member("priv", "roles/run.invoker", "user:alice") is True
    assert store.remove_member("priv", "roles/run.invoker", "user:alice") is False
    # A deploy without the flag leaves access as it is; a service's bindings go with it.
    store.create_revision("pub", "pub-00002-abc", 2, spec, EMPTY, None)
    assert store.members("pub") == {"allUsers"}
    store.delete_service("pub")
    assert store.members("pub") == frozenset()


def test_services_from_before_access_control_keep_their_access(tmp_path: Path) -> None:
    """Migration 3: allow_unauthenticated true or unset (everything was public then) becomes
    an allUsers binding; --no-allow-unauthenticated stays private."""
    database = tmp_path / "homerun.db"
    old = sqlite3.connect(database)
    for number, script in enumerate(store_module._MIGRATIONS[:2], start=1):
        for statement in script.split(";"):
            if statement.strip():
                old.execute(statement)
        old.execute(f"PRAGMA user_version = {number}")
    for name, allow in (("was-public", 1), ("was-unset", None), ("was-private", 0)):
        old.execute(
            "INSERT INTO services (name, created_at, allow_unauthenticated) VALUES (?, 0, ?)",
            (name, allow),
        )
    old.commit()
    old.close()
    store = Store(database)
    assert store.service("was-public").allow_unauthenticated is True
    assert store.service("was-unset").allow_unauthenticated is True
    assert store.service("was-private").allow_unauthenticated is False
    assert {record.ingress for record in store.services()} == {"all"}
