"""A Dockerfile outside the engine-less subset, built into an image by the container engine
(`podman build`); the artifact folder then only records the image's ID and what it runs."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from homerun.build.artifact import Artifact
from homerun.build.dockerfile import Instruction, split_instructions
from homerun.errors import BuildError, NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.engine import Engine

BUILD_SECONDS = 3600.0  # Cloud Build's default timeout is 10 minutes; apt and pip can be slow
# podman's progress: "STEP 3/5: RUN …", or "[2/2] STEP 3/5: …" in a multi-stage build.
_STEP = re.compile(r"^(?:\[(\d+)/\d+\] )?STEP (\d+)/\d+: ")


def engine_build(
    engine: Engine,
    source: Path,
    dest: Path,
    *,
    dockerfile: Path,
    output: Callable[[str], None],
    why: str,
) -> Artifact:
    """Blocking: `podman build` of `source` with its Dockerfile; every line of its output goes
    to `output`. A failing step raises BuildError naming the Dockerfile's line."""
    output(f"building with {engine.name} {engine.version}: {why}")
    tag = f"{engine.build_repository}:{secrets.token_hex(6)}"
    iidfile = dest / ".image-id"
    command = engine.command(
        "build",
        *engine.run_args,
        "--file",
        str(dockerfile),
        "--iidfile",
        str(iidfile),
        "--tag",
        tag,
        str(source),
    )
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as error:
        raise BuildError(f"cannot run {engine.program}: {error}") from error
    assert process.stdout is not None
    try:
        for raw in process.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            output(line)
        status = process.wait(timeout=BUILD_SECONDS)
    except BaseException:
        process.kill()
        process.wait()
        raise
    if status != 0:
        raise BuildError(_failure(dockerfile, lines, status))
    try:
        image = iidfile.read_text().strip()
    except OSError as error:
        raise BuildError(
            f"{engine.name} build did not say which image it made ({error})"
        ) from error
    iidfile.unlink()
    entrypoint, cmd = _entrypoint_and_cmd(_image_config(engine, image))
    output(f"image {image} ({tag})")
    artifact = Artifact(
        root=dest,
        cwd=dest,
        argv=entrypoint + cmd,
        env={},
        venv=None,
        entrypoint_origin=f"the image's ENTRYPOINT and CMD ({dockerfile.name}, built by "
        f"{engine.name})",
        server="other",
        engine_image=image,
        image_entrypoint=entrypoint,
    )
    artifact.save()
    return artifact


def _image_config(engine: Engine, image: str) -> dict[str, Any]:
    inspected = subprocess.run(
        engine.command("image", "inspect", "--format", "{{json .Config}}", image),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if inspected.returncode != 0:
        raise BuildError(f"{engine.name} cannot inspect the image it built: {inspected.stderr}")
    config = json.loads(inspected.stdout or "{}")
    return config if isinstance(config, dict) else {}


def _entrypoint_and_cmd(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """An image's ENTRYPOINT and CMD, from its config as `podman image inspect` gives it."""
    return (
        [str(word) for word in config.get("Entrypoint") or []],
        [str(word) for word in config.get("Cmd") or []],
    )


def _failure(dockerfile: Path, lines: list[str], status: int) -> str:
    """Which instruction failed, by the step podman was at, and its last lines."""
    step: tuple[int, int] | None = None  # (stage, step in it), both from 1
    for line in lines:
        match = _STEP.match(line)
        if match is not None:
            step = (int(match.group(1) or 1), int(match.group(2)))
    where = str(dockerfile)
    what = "the build failed"
    if step is not None:
        try:
            instructions, _ = split_instructions(dockerfile.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            instructions = []
        stages: list[list[Instruction]] = []
        for instruction in instructions:
            if instruction.keyword == "FROM":
                stages.append([])
            if stages:  # an ARG before the first FROM is no step
                stages[-1].append(instruction)
        stage, number = step
        if 0 < stage <= len(stages) and 0 < number <= len(stages[stage - 1]):
            instruction = stages[stage - 1][number - 1]
            shown = f"{instruction.keyword} {instruction.text}"
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            where = f"{dockerfile}:{instruction.line}"
            what = f"`{shown}` failed"
    tail = "\n".join(f"  {line}" for line in lines[-12:])
    return f"{where}: {what} (podman build exited with {status}); its last lines:\n{tail}"


def engine_image_record(engine: Engine, name: str) -> ArtifactRecord | None:
    """Blocking: an image in the engine's own storage (pulled, or built by hand) as the record
    of an artifact that runs it; None when the engine has no image of that name."""
    inspected = subprocess.run(
        engine.command("image", "inspect", "--format", "{{.Id}} {{json .Config}}", name),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if inspected.returncode != 0:
        return None
    image, _, raw = inspected.stdout.strip().partition(" ")
    config = json.loads(raw or "{}")
    config = config if isinstance(config, dict) else {}
    entrypoint, cmd = _entrypoint_and_cmd(config)
    image = image if image.startswith("sha256:") else f"sha256:{image}"
    return ArtifactRecord(
        argv=entrypoint + cmd,
        env={},
        entrypoint_origin=f"the image's ENTRYPOINT and CMD ({name}, in {engine.name}'s storage)",
        digest=image.removeprefix("sha256:"),
        engine_image=image,
        image_entrypoint=entrypoint,
    )


def engine_image_named(engine: Engine, name: str, missing: NotFound) -> ArtifactRecord:
    """Blocking: engine_image_record of `name`, or NotFound saying neither homerun's store
    (`missing`, its own NotFound) nor the engine has it."""
    record = engine_image_record(engine, name)
    if record is None:
        raise NotFound(
            f"{missing} {engine.name} has no image {name} either "
            f"(`{engine.name} images` lists those it has)."
        ) from None
    return record
