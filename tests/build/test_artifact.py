"""Artifacts: copies for new revisions and the digest that names
their image."""

from __future__ import annotations

import json
from pathlib import Path

from homerun.build.artifact import MANIFEST, artifact_digest, copy_artifact
from homerun.model.artifact import ArtifactRecord
from homerun.model.states import RevisionStatus
from homerun.spec import RevisionSpec
from homerun.store import RevisionRecord

READY = RevisionStatus.READY


def artifact(root: Path) -> ArtifactRecord:
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "app" / "run.sh").write_text("#!/bin/sh\n")
    (root / "app" / "run.sh").chmod(0o755)
    record = {
        "argv": [str(root / "app" / "run.sh"), "--port", "$(PORT)"],
        "env": {"PATH": "/venvs/abc/bin:/usr/bin", "VIRTUAL_ENV": "/venvs/abc"},
        "cwd": "app",
        "venv": "/venvs/abc",
        "entrypoint_origin": "Dockerfile CMD (line 3)",
        "server": "other",
    }
    (root / MANIFEST).write_text(json.dumps({"root": str(root), **record}))
    return ArtifactRecord.model_validate(record)


def test_the_digest_ignores_the_folder_and_bytecode_but_not_the_code(tmp_path: Path) -> None:
    first = artifact(tmp_path / "a")
    second = artifact(tmp_path / "b")
    assert artifact_digest(tmp_path / "a", first) == artifact_digest(tmp_path / "b", second)
    (tmp_path / "b" / "app" / "__pycache__").mkdir()
    (tmp_path / "b" / "app" / "__pycache__" / "main.pyc").write_bytes(b"\0")
    assert artifact_digest(tmp_path / "a", first) == artifact_digest(tmp_path / "b", second)
    (tmp_path / "b" / "app" / "main.py").write_text("print('changed')\n")
    assert artifact_digest(tmp_path / "a", first) != artifact_digest(tmp_path / "b", second)
    (tmp_path / "b" / "app" / "main.py").write_text("print('hi')\n")
    (tmp_path / "b" / "app" / "run.sh").chmod(0o644)
    assert artifact_digest(tmp_path / "a", first) != artifact_digest(tmp_path / "b", second)


def test_a_copied_artifact_points_at_its_own_folder_and_keeps_its_digest(tmp_path: Path) -> None:
    root = tmp_path / "revisions" / "svc-00001-abc"
    record = artifact(root)
    record = record.model_copy(update={"digest": artifact_digest(root, record)})
    revision = RevisionRecord(
        "svc-00001-abc", "svc", 1, RevisionSpec(source="/src"), READY, "", 0.0, 1.0, record
    )
    dest = tmp_path / "revisions" / "svc-00002-def"
    copied = copy_artifact(root, revision.artifact, revision.name, dest)
    assert copied.argv == [str(dest / "app" / "run.sh"), "--port", "$(PORT)"]
    assert copied.venv == "/venvs/abc"  # shared, not copied
    assert copied.digest == record.digest == artifact_digest(dest, copied)
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["root"] == str(dest)
    assert (dest / "app" / "run.sh").stat().st_mode & 0o100


def _default_gunicorn(root: Path, threads: int) -> ArtifactRecord:
    record = artifact(root).model_copy(
        update={
            "argv": [
                "/bin/sh",
                "-c",
                "exec gunicorn --bind 127.0.0.1:$PORT --workers 1 "
                f"--threads {threads} --timeout 0 main:app",
            ],
            "entrypoint_origin": "default: WSGI app (Flask) in main.py -> gunicorn",
            "server": "gunicorn",
        }
    )
    return record.model_copy(update={"digest": artifact_digest(root, record)})


def test_a_copy_fits_the_default_gunicorn_threads_to_the_new_concurrency(tmp_path: Path) -> None:
    root = tmp_path / "revisions" / "svc-00001-abc"
    record = _default_gunicorn(root, 80)
    dest = tmp_path / "revisions" / "svc-00002-def"
    copied = copy_artifact(root, record, "svc-00001-abc", dest, concurrency=20)
    assert copied.argv[2] == (
        "exec gunicorn --bind 127.0.0.1:$PORT --workers 1 --threads 20 --timeout 0 main:app"
    )
    # Another command is another artifact: its digest (and image name) differ.
    assert copied.digest == artifact_digest(dest, copied) != record.digest
    assert json.loads((dest / MANIFEST).read_text())["argv"] == copied.argv
    same = copy_artifact(root, record, "svc-00001-abc", tmp_path / "same", concurrency=80)
    assert same.argv == record.argv and same.digest == record.digest


def test_a_copy_never_rewrites_the_users_own_command(tmp_path: Path) -> None:
    root = tmp_path / "revisions" / "svc-00001-abc"
    record = _default_gunicorn(root, 8).model_copy(
        update={"entrypoint_origin": "Dockerfile CMD (line 5)"}
    )
    copied = copy_artifact(root, record, "svc-00001-abc", tmp_path / "copy", concurrency=80)
    assert "--threads 8 " in copied.argv[2]
