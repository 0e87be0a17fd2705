"""The container engine for the tests: podman as this machine needs it, and the base image
their Dockerfiles start FROM, made locally since no image registry is reachable.

The base image is a Debian bookworm root (debootstrap, some 90 s) with python3, pip and venv,
the host's CA bundle (pip inside a build reaches the package index through this machine's TLS
proxy) and no EXTERNALLY-MANAGED marker. Its tarball is kept in the test cache
(HOMERUN_TEST_CACHE, default ~/.cache/homerun-test), named after what goes into it, so that
later runs, CI's included, import it in seconds instead of building it again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from homerun.runtime.netns import NetNamespace

from .harness import Platform, running_platform

BASE_IMAGE = "localhost/homerun-test-debian:bookworm"
PODMAN_GLOBAL = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
PODMAN_RUN = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBOOTSTRAP_SECONDS = 900


def podman() -> list[str]:
    """The podman command line, or skip: engine tests need podman (and root, here)."""
    program = shutil.which("podman")
    if program is None:
        pytest.skip("podman is not installed (./scripts/setup containers installs it)")
    if os.geteuid() != 0:
        pytest.skip("the container tests run podman as root")
    return [program, *PODMAN_GLOBAL]


def cache_folder() -> Path:
    folder = Path(os.environ.get("HOMERUN_TEST_CACHE") or Path.home() / ".cache/homerun-test")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def base_tarball() -> Path:
    """The cached root filesystem of the base image, built once per recipe."""
    recipe = "\n".join([SUITE, MIRROR, *PACKAGES, HOST_CA_BUNDLE.read_text()])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    tarball = cache_folder() / f"debian-{SUITE}-python3-{key}.tar"
    if tarball.exists():
        return tarball
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        pytest.skip("debootstrap is not installed (./scripts/setup containers installs it)")
    with tempfile.TemporaryDirectory(prefix="homerun-rootfs-", dir=cache_folder()) as folder:
        root = Path(folder) / "root"
        subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=DEBOOTSTRAP_SECONDS,
        )
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)  # whole or absent: an interrupted run leaves no half tarball
    return tarball


def ensure_base_image() -> str:
    """BASE_IMAGE in podman's storage, imported from the cached tarball when missing."""
    command = podman()
    if subprocess.run([*command, "image", "exists", BASE_IMAGE]).returncode == 0:
        return BASE_IMAGE
    tarball = base_tarball()
    subprocess.run(
        [*command, "import", str(tarball), BASE_IMAGE],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return BASE_IMAGE


def containers_of(home: Path) -> list[str]:
    """IDs of the containers a daemon with this HOMERUN_HOME runs (its label)."""
    return containers_where(f"label=dev.homerun.home={home}")


def containers_where(condition: str) -> list[str]:
    """IDs of the containers, running or not, that podman's `--filter condition` keeps."""
    listed = subprocess.run(
        [*podman(), "ps", "--all", "--filter", condition, "--format", "{{.ID}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def inspect_container(container: str) -> str:
    """A container's name, state and command, for a failure's message."""
    shown = subprocess.run(
        [
            *podman(),
            "inspect",
            "--format",
            "{{.Name}} {{.State.Status}} pid={{.State.Pid}} exit={{.State.ExitCode}} "
            "created={{.Created}} finished={{.State.FinishedAt}} {{.Config.Cmd}}",
            container,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=False,
    )
    return (shown.stdout + shown.stderr).strip()


def remove_containers(home: Path) -> None:
    for container in containers_of(home):
        subprocess.run([*podman(), "rm", "--force", "--time", "0", container], check=False)


@contextmanager
def engine_platform_at(home: Path, venv_cache: Path, config: dict[str, Any]) -> Iterator[Platform]:
    """A daemon on `home` for the container tests (the base image made first). Once `homerun
    down` has stopped it, no container of that home is left; any left is removed anyway."""
    ensure_base_image()
    try:
        with running_platform(home, venv_cache, config) as platform:
            yield platform
        left = containers_of(home)
        assert left == [], [inspect_container(container) for container in left]
    finally:
        remove_containers(home)


@contextmanager
def run_as_a_pod(image: str, env: dict[str, str], name: str) -> Iterator[dict[str, Any]]:
    """Run `image` as a Knative pod runs it and yield what it answers at / (JSON): in a network
    namespace of its own, reached on that namespace's loopback at 8080 as Knative's
    queue-proxy reaches the user container. Nothing is published on the host: a published
    port's NAT rule can outlive its container (podman issue 27516) and catch later tests'
    connections to that port."""
    command = podman()
    namespace = NetNamespace.create()
    try:
        subprocess.run(
            [
                *command,
                "run",
                "--detach",
                "--name",
                name,
                *PODMAN_RUN,
                "--network",
                f"ns:/proc/{os.getpid()}/fd/{namespace.fd}",
                *(part for key, value in env.items() for part in ("--env", f"{key}={value}")),
                image,
            ],  # fmt: skip
            check=True,
            capture_output=True,
        )
        try:
            yield json.loads(_first_answer(namespace, 8080, deadline=time.monotonic() + 60))
        finally:
            subprocess.run([*command, "rm", "--force", "--time", "0", name], capture_output=True)
    finally:
        namespace.close()


def _first_answer(namespace: NetNamespace, port: int, *, deadline: float) -> bytes:
    """The body of the first 200 answer to GET / at 127.0.0.1:`port` in `namespace`."""
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            sock = namespace.new_socket()
            connection.sock = sock
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            connection.request("GET", "/")
            response = connection.getresponse()
            body = response.read()
            if response.status == 200:
                return body
        except OSError:
            pass
        finally:
            connection.close()
        assert time.monotonic() < deadline, "the pod's container did not answer"
        time.sleep(0.1)
