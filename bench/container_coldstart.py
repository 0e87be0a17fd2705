"""Container cold start: from "start an instance" to its first 200, homerun's container runtime
vs a plain `podman run` of the same image, alternating, in one run; with `--zygote` (root),
also homerun's zygote in the image's own root folder (config.yaml `container-zygote`,
runtime/image_root.py): a revision's first instance (its root container made and mounted, the
zygote importing the app, the fork) and a further instance (a fork of the live zygote).

The image is the seed's Flask app in a container that is not a python image (the base image
the container tests make, tests/e2e/containers.py, since no registry is reachable here):
`pip install flask gunicorn`, then the seed's shell-form CMD. homerun's builder builds it
with podman (build/engine_build.py); each start is timed until GET / answers 200 on the
published loopback port (as root, also a container in a network namespace of its own, as
homerun runs it with the sandbox: on that namespace's loopback); every container is removed
before the next start.

    .venv/bin/python bench/container_coldstart.py [--runs 5] [--zygote] [--output PATH]

Needs podman and the base image (`.venv/bin/pytest -m containers tests/e2e/test_containers.py`
makes it once). Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform as host_platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _processes import REPO_ROOT, RESULTS, free_port, git_commit
from _processes import WORK as BENCH_WORK

from homerun.build import build
from homerun.model.engine import ContainerSpec, Engine
from homerun.runtime import InstanceSpec
from homerun.runtime.container import ContainerRuntime, find_engine
from homerun.runtime.netns import NetNamespace, Networks, can_make
from homerun.runtime.process import ProcessRuntime
from homerun.runtime.sandbox import probe as probe_sandbox
from homerun.runtime.zygote import ZygoteRuntime

WORK = BENCH_WORK / "container-coldstart"
BASE_IMAGE = "localhost/homerun-test-debian:bookworm"
FIRST_200_SECONDS = 60.0
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
WORKDIR /srv
RUN pip install --no-cache-dir flask gunicorn
COPY main.py .
CMD exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app
"""


def first_200(port: int, started: float) -> float:
    """Milliseconds from `started` to the first 200 of GET / on 127.0.0.1:port."""
    deadline = started + FIRST_200_SECONDS
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.perf_counter() < deadline:
            try:
                if client.get(f"http://127.0.0.1:{port}/").status_code == 200:
                    return (time.perf_counter() - started) * 1000
            except httpx.TransportError:
                pass
            time.sleep(0.002)
    raise TimeoutError(f"no 200 on port {port} within {FIRST_200_SECONDS}s")


def first_200_inside(namespace: NetNamespace, port: int, started: float) -> float:
    """first_200 on the loopback of a revision's network namespace, where its instances
    listen (the router connects there the same way)."""
    deadline = started + FIRST_200_SECONDS
    while time.perf_counter() < deadline:
        with namespace.new_socket() as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return (time.perf_counter() - started) * 1000
            except OSError:
                pass
        time.sleep(0.002)
    raise TimeoutError(f"no 200 on port {port} within {FIRST_200_SECONDS}s")


def instance_spec(image: str, index: int, revision: str = "bench-00001-abc") -> InstanceSpec:
    port = free_port()
    return InstanceSpec(
        name=f"bench-{index}",
        argv=[],
        env={
            "K_SERVICE": "bench",
            "K_REVISION": revision,
            "K_CONFIGURATION": "bench",
            "PORT": str(port),
        },
        cwd=Path("/"),
        port=port,
        revision=revision,
        container=ContainerSpec(image=image),
    )


async def through_homerun(runtime: ContainerRuntime, image: str, index: int) -> float:
    spec = instance_spec(image, index)
    started = time.perf_counter()
    instance = await runtime.start(spec, lambda stream, line: None)
    try:
        return await asyncio.to_thread(first_200, spec.port, started)
    finally:
        instance.signal(9)
        await instance.wait()


async def through_own_namespace(runtime: ContainerRuntime, image: str, index: int) -> float:
    """As through_homerun, the container in a network namespace made for it (homerun's way
    as root with the sandbox): its first 200 on the container port, on that loopback."""
    spec = instance_spec(image, 100 + index)
    started = time.perf_counter()
    instance = await runtime.start(spec, lambda stream, line: None)
    try:
        network = getattr(instance, "network", None)
        assert network is not None, "the container got no network namespace"
        return await asyncio.to_thread(first_200_inside, network, instance.port, started)
    finally:
        instance.signal(9)
        await instance.wait()


async def through_zygote(
    runtime: ContainerRuntime, networks: Networks, image: str, index: int
) -> tuple[float, float]:
    """A new revision's first instance, then a second one forked from its zygote."""
    revision = f"bench-{index:05d}-zyg"
    figures = []
    instances = []
    try:
        for number in (1, 2):
            spec = instance_spec(image, index * 10 + number, revision)
            started = time.perf_counter()
            instances.append(await runtime.start(spec, lambda stream, line: None))
            namespace = networks.of(revision)
            figures.append(await asyncio.to_thread(first_200_inside, namespace, spec.port, started))
        mode, reason = runtime.mode(revision)
        assert mode == "zygote", f"the instances were not forked: {reason}"
    finally:
        for instance in instances:
            instance.signal(9)
            await instance.wait()
        runtime.forget(revision)
    return figures[0], figures[1]


def plain_podman(podman: list[str], run_args: tuple[str, ...], image: str, index: int) -> float:
    port = free_port()
    name = f"bench-plain-{index}"
    started = time.perf_counter()
    subprocess.run(
        [
            *podman,
            "run",
            "--detach",
            "--rm",
            "--name",
            name,
            *run_args,
            "--publish",
            f"127.0.0.1:{port}:8080",
            "--env",
            "PORT=8080",
            image,
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    try:
        return first_200(port, started)
    finally:
        subprocess.run([*podman, "rm", "--force", "--time", "0", name], capture_output=True)


async def measure(engine: Engine, image: str, runs: int, zygote: bool) -> dict[str, list[float]]:
    runtime = ContainerRuntime(engine, ProcessRuntime(), home=WORK)
    figures: dict[str, list[float]] = {
        "homerun": [],
        "namespaced": [],
        "podman": [],
        "first": [],
        "further": [],
    }
    # As root, also each container in a network namespace of its own, with slirp4netns.
    own_networks = Networks(slirp4netns=shutil.which("slirp4netns")) if can_make() is None else None
    namespaced = (
        ContainerRuntime(engine, ProcessRuntime(), home=WORK, networks=own_networks)
        if own_networks is not None
        else None
    )
    rooted = networks = None
    if zygote:
        sandbox, said = probe_sandbox("on", WORK)
        assert sandbox is not None and sandbox.privileged, f"--zygote needs root: {said}"
        networks = Networks()
        zygotes = ZygoteRuntime(sandbox=sandbox, networks=networks)
        zygotes.open()
        rooted = ContainerRuntime(engine, zygotes, home=WORK, unrooted=None)
    try:
        for index in range(runs):  # alternating: all see the same machine state
            figures["homerun"].append(await through_homerun(runtime, image, index))
            if namespaced is not None:
                figures["namespaced"].append(await through_own_namespace(namespaced, image, index))
            figures["podman"].append(
                await asyncio.to_thread(
                    plain_podman, engine.command(), engine.run_args, image, index
                )
            )
            if rooted is not None and networks is not None:
                first, further = await through_zygote(rooted, networks, image, index)
                figures["first"].append(first)
                figures["further"].append(further)
    finally:
        if rooted is not None:
            await rooted.close()
            zygotes.close()
        if networks is not None:
            networks.close()
        if own_networks is not None:
            own_networks.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--zygote", action="store_true", help="also the zygote in the image root")
    parser.add_argument("--output", type=Path)
    options = parser.parse_args()
    engine = find_engine("auto")
    if engine is None:
        print("podman is not installed: ./scripts/setup containers", file=sys.stderr)
        return 1
    podman = engine.command()
    if subprocess.run([*podman, "image", "exists", BASE_IMAGE]).returncode != 0:
        print(f"{BASE_IMAGE} is missing: run the container tests once", file=sys.stderr)
        return 1
    source = WORK / "app"
    source.mkdir(parents=True, exist_ok=True)
    (source / "main.py").write_text(
        (REPO_ROOT / "examples" / "cloudrun_example" / "main.py").read_text()
    )
    (source / "Dockerfile").write_text(DOCKERFILE)
    dest = WORK / f"artifact-{int(time.time())}"
    artifact = build(
        source,
        dest,
        command=None,
        args=None,
        user_env={},
        venv_cache=WORK / "venvs",
        output=lambda line: None,
        engine=engine,
    )
    image = artifact.engine_image
    assert image is not None
    measured = asyncio.run(measure(engine, image, options.runs, options.zygote))
    homerun_ms, podman_ms = measured["homerun"], measured["podman"]
    homerun_median = statistics.median(homerun_ms)
    podman_median = statistics.median(podman_ms)
    ratio = homerun_median / podman_median
    print("| start | median ms | min ms | max ms |")
    print("| --- | --- | --- | --- |")
    rows = [("homerun container runtime, port published", homerun_ms)]
    if measured["namespaced"]:
        rows.append(("homerun container runtime, own network namespace", measured["namespaced"]))
    rows.append(("podman run", podman_ms))
    if options.zygote:
        rows += [
            ("homerun zygote in the image root: a revision's first instance", measured["first"]),
            ("homerun zygote in the image root: a further instance", measured["further"]),
        ]
    for label, figures in rows:
        print(
            f"| {label} | {statistics.median(figures):.0f} | {min(figures):.0f} | "
            f"{max(figures):.0f} |"
        )
    print(f"\nratio homerun / podman run: {ratio:.2f} ({options.runs} runs each)")
    namespaced_figures = {}
    if measured["namespaced"]:
        namespaced_median = statistics.median(measured["namespaced"])
        print(f"ratio own namespace / podman run: {namespaced_median / podman_median:.2f}")
        namespaced_figures = {
            "namespaced_ms": measured["namespaced"],
            "namespaced_median_ms": namespaced_median,
        }
    zygote_figures = {}
    if options.zygote:
        first, further = (
            statistics.median(measured["first"]),
            statistics.median(measured["further"]),
        )
        print(f"ratio first instance (zygote) / podman run: {first / podman_median:.2f}")
        print(f"ratio further instance (fork) / podman run: {further / podman_median:.3f}")
        zygote_figures = {
            "zygote_first_ms": measured["first"],
            "zygote_further_ms": measured["further"],
            "zygote_first_median_ms": first,
            "zygote_further_median_ms": further,
        }
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    output = options.output or RESULTS / f"container-coldstart-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "benchmark": "container-coldstart",
                "commit": git_commit(),
                "cores": len(os.sched_getaffinity(0)),
                "machine": host_platform.machine(),
                "engine": f"{engine.name} {engine.version}",
                "runs": options.runs,
                "homerun_ms": homerun_ms,
                "podman_run_ms": podman_ms,
                "homerun_median_ms": homerun_median,
                "podman_run_median_ms": podman_median,
                "ratio": ratio,
                **namespaced_figures,
                **zygote_figures,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
