"""The folder an instance starts in (the artifact's, or the container's workingDir), and what
it runs as describe shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.control.environment import effective_entrypoint, instance_cwd
from homerun.errors import InvalidSpec
from homerun.model.artifact import ArtifactRecord
from homerun.spec import RevisionSpec


def artifact(cwd: str) -> ArtifactRecord:
    return ArtifactRecord(argv=["python", "main.py"], env={}, cwd=cwd)


def test_without_working_dir_the_artifacts_folder(tmp_path: Path) -> None:
    assert instance_cwd(tmp_path, artifact("app"), None) == tmp_path / "app"


def test_a_source_builds_code_is_at_workspace(tmp_path: Path) -> None:
    (tmp_path / "app" / "sub").mkdir(parents=True)
    built = artifact("app")
    assert instance_cwd(tmp_path, built, "/workspace") == (tmp_path / "app").resolve()
    assert instance_cwd(tmp_path, built, "/workspace/sub") == (tmp_path / "app/sub").resolve()
    with pytest.raises(InvalidSpec, match="without a Dockerfile the code is at /workspace"):
        instance_cwd(tmp_path, built, "/srv")
    with pytest.raises(InvalidSpec, match="no such folder in the image"):
        instance_cwd(tmp_path, built, "/workspace/missing")


def test_a_dockerfiles_working_dir_is_in_its_rootfs(tmp_path: Path) -> None:
    (tmp_path / "rootfs" / "app" / "src").mkdir(parents=True)
    built = artifact("rootfs/app")
    assert instance_cwd(tmp_path, built, "/app/src") == (tmp_path / "rootfs/app/src").resolve()


def test_a_link_out_of_the_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "escape").symlink_to("/etc")
    with pytest.raises(InvalidSpec, match="no such folder in the image"):
        instance_cwd(tmp_path, artifact("app"), "/workspace/escape")


def test_a_containers_command_and_args_replace_its_images_as_kubernetes_says() -> None:
    image = ArtifactRecord(
        argv=["/entry", "--from-cmd"],
        env={},
        entrypoint_origin="the image's ENTRYPOINT and CMD (app, in podman's storage)",
        engine_image="sha256:" + "a" * 64,
    )
    assert effective_entrypoint(image, RevisionSpec(source="")) == (
        image.argv,
        image.entrypoint_origin,
    )
    assert effective_entrypoint(image, RevisionSpec(source="", command=["/bin/other"])) == (
        ["/bin/other"],
        "--command, in place of the image's ENTRYPOINT and CMD",
    )
    assert effective_entrypoint(
        image, RevisionSpec(source="", command=["/bin/other"], args=["x"])
    ) == (
        ["/bin/other", "x"],
        "--command and --args, in place of the image's ENTRYPOINT and CMD",
    )
    # Recorded before the image's ENTRYPOINT was kept: the args, and where they go.
    assert effective_entrypoint(image, RevisionSpec(source="", args=["--port", "9"])) == (
        ["--port", "9"],
        "--args, after the image's ENTRYPOINT, in place of its CMD",
    )
    kept = image.model_copy(update={"image_entrypoint": ["/entry"]})
    assert effective_entrypoint(kept, RevisionSpec(source="", args=["--port", "9"])) == (
        ["/entry", "--port", "9"],
        "the image's ENTRYPOINT, then --args in place of its CMD",
    )
    no_entrypoint = image.model_copy(update={"argv": ["/cmd"], "image_entrypoint": []})
    assert effective_entrypoint(no_entrypoint, RevisionSpec(source="", args=["/other"])) == (
        ["/other"],
        "--args in place of the image's CMD (no ENTRYPOINT: they are the command)",
    )


def test_a_source_builds_artifact_already_holds_its_command() -> None:
    built = ArtifactRecord(argv=["/bin/other", "x"], env={}, entrypoint_origin="--command")
    spec = RevisionSpec(source="", command=["/bin/other"], args=["x"])
    assert effective_entrypoint(built, spec) == (["/bin/other", "x"], "--command")
