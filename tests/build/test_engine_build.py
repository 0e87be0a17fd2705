"""A failing podman build is reported by its Dockerfile line, multi-stage builds included."""

from __future__ import annotations

from pathlib import Path

from homerun.build.engine_build import _failure

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=localhost/base
FROM $BASE AS build
RUN echo one > /one

FROM $BASE
COPY --from=build /one /one
RUN apt-get install -y \\
    no-such-package
CMD ["python3"]
"""


def test_the_failing_step_of_a_stage_is_named_by_its_line(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    lines = [
        "[1/2] STEP 1/2: FROM localhost/base AS build",
        "[1/2] STEP 2/2: RUN echo one > /one",
        "[2/2] STEP 1/4: FROM localhost/base",
        "[2/2] STEP 2/4: COPY --from=build /one /one",
        "[2/2] STEP 3/4: RUN apt-get install -y     no-such-package",
        "E: Unable to locate package no-such-package",
        'Error: building at STEP "RUN apt-get install -y     no-such-package": exit status 100',
    ]
    message = _failure(dockerfile, lines, 125)
    assert message.startswith(f"{dockerfile}:8: `RUN apt-get install -y")
    assert "failed (podman build exited with 125)" in message
    assert "  E: Unable to locate package no-such-package" in message


def test_a_single_stage_and_a_failure_before_any_step(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM localhost/base\nRUN false\n")
    assert _failure(dockerfile, ["STEP 1/2: FROM localhost/base", "STEP 2/2: RUN false"], 1)
    message = _failure(dockerfile, ["STEP 1/2: FROM localhost/base", "STEP 2/2: RUN false"], 1)
    assert message.startswith(f"{dockerfile}:2: `RUN false` failed")
    early = _failure(dockerfile, ["Error: no such image"], 125)
    assert early.startswith(f"{dockerfile}: the build failed (podman build exited with 125)")
