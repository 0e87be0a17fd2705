"""Secrets on disk: numbered versions, mode 0600, `latest`, and errors that never hold values."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from homerun.errors import InvalidSpec, NotFound
from homerun.secret_store import SecretStore
from homerun.spec import SecretRef


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_versions_count_up_and_latest_is_the_newest(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    assert store.create("db-password", "hunter2\n").version == 1
    assert store.add_version("db-password", "correct horse").version == 2
    assert [v.version for v in store.versions("db-password")] == [1, 2]
    assert store.resolve(SecretRef(secret="db-password", version="1")) == "hunter2\n"
    assert store.resolve(SecretRef(secret="db-password")) == "correct horse"
    assert store.version_of(SecretRef(secret="db-password")) == 2
    assert store.names() == ["db-password"]


def test_files_are_private(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    store.create("token", "abc")
    assert mode(tmp_path / "secrets") == 0o700
    assert mode(tmp_path / "secrets" / "token") == 0o700
    assert mode(tmp_path / "secrets" / "token" / "1") == 0o600


def test_create_twice_and_missing_versions(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    store.create("token", "abc")
    with pytest.raises(InvalidSpec, match="already exists; add a version"):
        store.create("token", "def")
    with pytest.raises(NotFound, match="has no version 7"):
        store.resolve(SecretRef(secret="token", version="7"))
    with pytest.raises(NotFound, match="secret 'nope' not found"):
        store.resolve(SecretRef(secret="nope"))
    with pytest.raises(NotFound):
        store.add_version("nope", "x")


def test_bad_names_and_data(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    with pytest.raises(InvalidSpec, match="invalid secret name"):
        store.create("../etc", "x")
    with pytest.raises(InvalidSpec, match="empty"):
        store.create("token", "")
    with pytest.raises(InvalidSpec, match="NUL") as error:
        store.create("token", "sec\0ret")
    assert "sec" not in str(error.value).replace("secret", "")


def test_delete(tmp_path: Path) -> None:
    store = SecretStore(tmp_path / "secrets")
    store.create("token", "abc")
    store.delete("token")
    assert store.names() == []
    assert not store.exists(SecretRef(secret="token"))
