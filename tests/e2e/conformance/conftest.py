"""The Knative runtime contract suite: the contract's deployed app on each instance runtime this
machine has (the process runtime, the same sandboxed with bubblewrap, the container runtime with
podman), and a summary of what held at each level (MUST, SHOULD) per runtime, printed at the
end of the run."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..containers import BASE_IMAGE, ensure_base_image, remove_containers
from ..harness import APPS, SHARED_CONFIG, Platform, running_platform

CONTRACT_APP = APPS / "runtime_contract"
RUNTIMES = ("process", "sandbox", "container")
# The contract app as a container image: Debian's python3 (as `python` too, for the tests'
# `--command python`), the code in /workspace as a buildpack puts it, listening on every
# interface of the container's network (its own namespace's loopback, or podman's network
# where the port is published).
CONTRACT_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN ln -s /usr/bin/python3 /usr/local/bin/python
ENV CONTRACT_BIND=0.0.0.0
WORKDIR /workspace
COPY . .
CMD ["python", "main.py"]
"""
# tests/apps/grpc_echo (h2c) as an image: grpcio from the package index, in the build.
GRPC_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN pip install --no-cache-dir grpcio grpcio-health-checking
ENV GRPC_BIND=0.0.0.0
WORKDIR /workspace
COPY main.py .
CMD ["python3", "main.py"]
"""


@pytest.fixture(
    scope="session",
    params=[
        "process",
        "sandbox",
        # Image builds: slow, as the container tests are.
        pytest.param("container", marks=[pytest.mark.containers, pytest.mark.slow]),
    ],
)
def instance_runtime(request: pytest.FixtureRequest) -> str:
    """The instance runtime the suite runs against; skipped where this machine lacks it."""
    name = str(request.param)
    if name == "sandbox" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (./scripts/setup test installs it)")
    if name == "container":
        ensure_base_image()  # skips without podman or root
    return name


@pytest.fixture(autouse=True)
def _on_each_runtime(instance_runtime: str) -> None:
    """Every statement is checked on every runtime, also those that ask no instance."""


@pytest.fixture(scope="session")
def platform(
    instance_runtime: str, tmp_path_factory: pytest.TempPathFactory, venv_cache: Path
) -> Iterator[Platform]:
    """A daemon of the suite's own for each runtime (the shared one's settings)."""
    config = {**SHARED_CONFIG, "sandbox": "on" if instance_runtime == "sandbox" else "off"}
    home = tmp_path_factory.mktemp(f"contract-{instance_runtime}") / "home"
    try:
        with running_platform(home, venv_cache, config) as daemon:
            yield daemon
    finally:
        if instance_runtime == "container":
            remove_containers(home)


@pytest.fixture(scope="session")
def contract_source(instance_runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract app's folder as this runtime runs it: with a Dockerfile for containers."""
    if instance_runtime != "container":
        return CONTRACT_APP
    source = tmp_path_factory.mktemp("container") / "runtime_contract"
    shutil.copytree(CONTRACT_APP, source)
    (source / "Procfile").unlink()
    (source / "Dockerfile").write_text(CONTRACT_DOCKERFILE)
    return source


@pytest.fixture(scope="session")
def grpc_source(instance_runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/apps/grpc_echo, a gRPC server on h2c, as this runtime runs it."""
    if instance_runtime != "container":
        return APPS / "grpc_echo"
    source = tmp_path_factory.mktemp("container") / "grpc_echo"
    source.mkdir()
    shutil.copyfile(APPS / "grpc_echo" / "main.py", source / "main.py")
    (source / "Dockerfile").write_text(GRPC_DOCKERFILE)
    return source


@pytest.fixture(scope="session")
def contract(platform: Platform, contract_source: Path) -> str:
    """tests/apps/runtime_contract deployed once, as `contract`: its Procfile's custom command
    (or its image's CMD), so every instance is spawned."""
    platform.ensure_deployed("contract", contract_source)
    return "contract"


@pytest.fixture(scope="session")
def forked_contract(
    platform: Platform, instance_runtime: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The same app without its Procfile, as `contract-forked`: its WSGI `app` under gunicorn,
    instances forked from the revision's zygote."""
    if instance_runtime == "container":
        pytest.skip("n.a.: a container's instances are not forked from a zygote")
    source = tmp_path_factory.mktemp("forked") / "runtime_contract"
    shutil.copytree(CONTRACT_APP, source)
    (source / "Procfile").unlink()
    platform.ensure_deployed("contract-forked", source)
    platform.request("contract-forked", "GET", "/")
    (revision,) = platform.describe_service("contract-forked")["revisions"]
    assert revision["start_mode"]["mode"] == "zygote", revision
    return "contract-forked"


@pytest.fixture(scope="session", params=["spawned", "forked"])
def instance_of(request: pytest.FixtureRequest, platform: Platform) -> str:
    """Each way an instance starts: the service to ask (on each runtime's daemon: asking for
    `platform` makes pytest set this up again for each)."""
    fixture = "contract" if request.param == "spawned" else "forked_contract"
    return str(request.getfixturevalue(fixture))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The runtime each report is about, for the summary (reports carry user_properties).
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "instance_runtime" in callspec.params:
            item.user_properties.append(("runtime", callspec.params["instance_runtime"]))


def _level(name: str) -> str | None:
    for level in ("must", "should"):
        if name.startswith(f"test_{level}_"):
            return level.upper()
    return None


def _verdict(seen: set[str]) -> str:
    """A statement's verdict on one runtime: it holds when every run of it held (one per way
    an instance starts), n.a. when all were skipped."""
    if "failed" in seen:
        return "failed"
    if "xfailed" in seen:
        return "deliberately not held"
    if seen == {"skipped"}:
        return "n.a."
    return "held"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One verdict per statement and runtime: held, failed, n.a. (skipped), or deliberately
    not held (an expected failure)."""
    outcomes: dict[tuple[str, str, str], set[str]] = {}
    for outcome in ("passed", "failed", "skipped", "xfailed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "conformance/" not in nodeid:
                continue
            if getattr(report, "when", "call") == "teardown" and outcome != "error":
                continue
            name = nodeid.rpartition("::")[2].partition("[")[0]
            level = _level(name)
            where = dict(getattr(report, "user_properties", [])).get("runtime")
            if level is not None and where is not None:
                seen = "failed" if outcome == "error" else outcome
                outcomes.setdefault((str(where), level, name), set()).add(seen)
    if not outcomes:
        return
    tally: Counter[tuple[str, str, str]] = Counter()
    skipped_runtimes = set()
    for (where, level, _), seen_all in outcomes.items():
        tally[(where, level, _verdict(seen_all))] += 1
    for where in RUNTIMES:
        statements = [seen for (runtime, _, _), seen in outcomes.items() if runtime == where]
        if statements and all(seen == {"skipped"} for seen in statements):
            skipped_runtimes.add(where)
    terminalreporter.section("Knative runtime contract, per instance runtime")
    for where in RUNTIMES:
        if not any(runtime == where for runtime, _, _ in tally):
            continue
        if where in skipped_runtimes:
            terminalreporter.write_line(f"{where}: not on this machine (skipped)")
            continue
        for level in ("MUST", "SHOULD"):
            deliberate = tally[(where, level, "deliberately not held")]
            terminalreporter.write_line(
                f"{where}: {level}: {tally[(where, level, 'held')]} held, "
                f"{tally[(where, level, 'failed')]} failed, {tally[(where, level, 'n.a.')]} n.a."
                + (f", {deliberate} deliberately not held" if deliberate else "")
            )
