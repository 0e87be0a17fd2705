"""An image built with podman, its instances forked from a zygote in the image's own root
folder (config.yaml `container-zygote: true`, runtime/image_root.py): the image's files, Python
and command, the revision's own user and sandbox, nothing of the host's; an image the zygote
cannot run stays on the engine and says why; nothing is left once the service goes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from homerun.runtime.sandbox import FIRST_UID

from .containers import (
    BASE_IMAGE,
    containers_of,
    engine_platform_at,
    ensure_base_image,
    remove_containers,
)
from .harness import APPS, Platform, describe, running_platform
from .test_containers import FLASK_DOCKERFILE, _name

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.e2e, pytest.mark.containers, pytest.mark.slow]

# The seed's app in the image, saying where it runs: its user, folder, Python, PORT, a file
# only the image has, whether it sees the daemon's home, whether it may write /tmp.
REPORT_APP = """\
import os
import sys

from flask import Flask

app = Flask(__name__)


@app.route("/")
def report():
    with open("/tmp/written", "w") as written:
        written.write("x")
    with open("/built-into-the-image") as marker:
        image_file = marker.read().strip()
    return {
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "python": sys.executable,
        "port": os.environ["PORT"],
        "k_service": os.environ.get("K_SERVICE"),
        "image_file": image_file,
        # The daemon's database and the revisions' files: never shown (the folders on the
        # way to what is shown, the hosts file and the inspector's, are empty ones).
        "sees_home": any(
            os.path.exists(os.path.join(os.environ["DAEMON_HOME"], name))
            for name in ("homerun.db", "revisions", "logs", "daemon.log")
        ),
        "pid": os.getpid(),
        "status": dict(
            line.split(":", 1) for line in open("/proc/self/status").read().splitlines()
        ),
    }
"""


def report_app(tmp_path: Path) -> Path:
    """The report app's folder: the seed's Dockerfile, and a file only the image has."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text(REPORT_APP)
    dockerfile = FLASK_DOCKERFILE.replace(
        "COPY main.py .", "COPY main.py .\nRUN echo image > /built-into-the-image"
    )
    (app / "Dockerfile").write_text(dockerfile)
    return app


@pytest.fixture(scope="module")
def zygote_platform(
    tmp_path_factory: pytest.TempPathFactory, venv_cache: Path
) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("container-zygote") / "home"
    # `homerun down` removes the image roots with the zygotes: no container is left.
    config = {"stop-grace-seconds": 3, "container-zygote": True}
    with engine_platform_at(home, venv_cache, config) as platform:
        yield platform


def test_instances_fork_in_the_images_root_as_the_revisions_user(
    zygote_platform: Platform, tmp_path: Path
) -> None:
    app = report_app(tmp_path)
    platform = zygote_platform
    result = platform.deploy_ok(
        "zyg", app, "--set-env-vars", f"DAEMON_HOME={platform.home}", "--min-instances", "2"
    )
    assert "building with podman" in result.stdout + result.stderr
    answer = platform.request("zyg", "GET", "/").json()
    assert answer["image_file"] == "image"  # the image's root is `/`
    assert answer["python"] == "/usr/bin/python3"  # the image's interpreter
    assert answer["cwd"] == "/srv"  # its WORKDIR
    assert answer["uid"] >= FIRST_UID  # the revision's own user, not the image's root
    assert answer["sees_home"] is False  # nothing of the daemon's
    # No capability left, none to gain (no_new_privs), as in any revision's sandbox. The
    # bounding set stays as it was (no static program of the host's empties it): with
    # no_new_privs, exec gains nothing within it.
    status = {name: value.strip() for name, value in answer["status"].items()}
    held = ("CapInh", "CapPrm", "CapEff", "CapAmb")
    assert [int(status[name], 16) for name in held] == [0, 0, 0, 0], status
    assert status["NoNewPrivs"] == "1", status
    assert status["Groups"] == "", status  # no supplementary group
    assert answer["k_service"] == "zyg"
    assert int(answer["port"]) != 8080  # each instance's own port
    described = platform.describe_service("zyg")
    (revision,) = described["revisions"]
    mode = revision["start_mode"]
    assert mode["mode"] == "zygote", mode["reason"]
    assert "its image's root folder" in mode["reason"], mode
    # One container, made and mounted, never started: the image root.
    (root,) = containers_of(platform.home)
    platform.run("services", "delete", "zyg", "-q", check=True, timeout=60)
    deadline = time.monotonic() + 30
    while root in containers_of(platform.home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert root not in containers_of(platform.home)  # the revision's root went with it


# A hostile image: a .pth file in its Python's site-packages, run by every start of that
# Python, records who runs it and what it holds; the app hands the record back.
STARTUP_HOOK = (
    "import os; open('/tmp/started-as', 'a').write('%d %d %s\\n' % (os.getuid(), os.geteuid(), "
    "[line.split()[1] for line in open('/proc/self/status') if line.startswith('CapEff')][0]))"
)
RECORD_APP = """\
from flask import Flask

app = Flask(__name__)


@app.route("/")
def record():
    return open("/tmp/started-as").read()
"""


def test_nothing_of_the_image_runs_as_root(zygote_platform: Platform, tmp_path: Path) -> None:
    # The image's own Python, its libraries and its site-packages are the image author's: the
    # sandbox makes the revision's user before any of them runs (with the host's static
    # busybox), never as root with the capabilities bwrap holds.
    app = tmp_path / "hostile"
    app.mkdir()
    (app / "main.py").write_text(RECORD_APP)
    (app / "startup.pth").write_text(STARTUP_HOOK + "\n")
    site = "$(python3 -c 'import site; print(site.getsitepackages()[0])')"
    dockerfile = FLASK_DOCKERFILE.replace(
        "COPY main.py .",
        f"COPY main.py startup.pth ./\nRUN mkdir -p {site} && mv startup.pth {site}/",
    )
    (app / "Dockerfile").write_text(dockerfile)
    zygote_platform.deploy_ok("zyg-hostile", app)
    (revision,) = zygote_platform.describe_service("zyg-hostile")["revisions"]
    assert revision["start_mode"]["mode"] == "zygote", revision["start_mode"]
    lines = zygote_platform.request("zyg-hostile", "GET", "/").text.splitlines()
    # The first Python (homerun's _homerun_enter.py), then the app's.
    assert len(lines) >= 2, lines
    for line in lines:
        uid, euid, effective = line.split()
        assert int(uid) >= FIRST_UID and int(euid) >= FIRST_UID, lines
        assert int(effective, 16) == 0, lines
    zygote_platform.run("services", "delete", "zyg-hostile", "-q", check=True, timeout=60)


def test_an_image_with_a_symbolic_link_where_the_sandbox_mounts_runs_on_the_engine(
    zygote_platform: Platform, tmp_path: Path
) -> None:
    # bwrap runs as root and makes its mount points inside the image's root folder, following
    # links there: /tmp as a link to ../oldroot/tmp/NAME (bwrap's old root is the host's)
    # would have it make /tmp/NAME on the host. Such an image runs on the engine, saying why.
    outside = Path(f"/tmp/homerun-test-escape-{uuid.uuid4().hex}")
    app = tmp_path / "linked"
    app.mkdir()
    (app / "main.py").write_text((APPS / "flask_seed" / "main.py").read_text())
    link = f"RUN rm -rf /tmp && ln -s ../oldroot{outside} /tmp"
    (app / "Dockerfile").write_text(
        FLASK_DOCKERFILE.replace("COPY main.py .", f"COPY main.py .\n{link}")
    )
    zygote_platform.deploy_ok("zyg-linked", app)
    try:
        (revision,) = zygote_platform.describe_service("zyg-linked")["revisions"]
        mode = revision["start_mode"]
        assert mode["mode"] == "container", mode
        assert "cannot hold the sandbox's mount points: /tmp is a symbolic link" in str(mode)
        assert zygote_platform.request("zyg-linked", "GET", "/").json() == {"hello": "world"}
        assert not outside.exists()
    finally:
        zygote_platform.run("services", "delete", "zyg-linked", "-q", timeout=60)
        if outside.exists():
            outside.rmdir()


def test_an_image_with_a_user_of_its_own_runs_on_the_engine_saying_why(
    zygote_platform: Platform,
) -> None:
    zygote_platform.deploy_ok("ctr-user", APPS / "container_app")
    answer = zygote_platform.request("ctr-user", "GET", "/").json()
    assert answer["uid"] == 4321 and answer["port"] == "8080"  # USER app, the container port
    (revision,) = zygote_platform.describe_service("ctr-user")["revisions"]
    mode = revision["start_mode"]
    assert mode["mode"] == "container", mode
    assert "not forked from a zygote: the image runs as user app" in mode["reason"], mode


def test_an_image_asking_for_the_default_seccomp_profile_runs_on_the_engine(
    zygote_platform: Platform, tmp_path: Path
) -> None:
    # In its image's root an instance is sandboxed, without a seccomp filter: a revision whose
    # securityContext asks for the runtime's default profile runs as a container, as asked.
    app = report_app(tmp_path)
    platform = zygote_platform
    platform.deploy_ok("zyg-seccomp", app, "--set-env-vars", f"DAEMON_HOME={platform.home}")
    (revision,) = platform.describe_service("zyg-seccomp")["revisions"]
    assert revision["start_mode"]["mode"] == "zygote", revision["start_mode"]
    status = platform.request("zyg-seccomp", "GET", "/").json()["status"]
    assert status["Seccomp"].strip() == "0", status  # the sandbox has no filter
    described = platform.run("services", "describe", "zyg-seccomp", "--format", "yaml", check=True)
    document = yaml.safe_load(described.stdout)
    document.pop("status", None)
    container = document["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"seccompProfile": {"type": "RuntimeDefault"}}
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    result = platform.run("services", "replace", str(path), timeout=270)
    assert result.returncode == 0, describe(result)
    status = platform.request("zyg-seccomp", "GET", "/").json()["status"]
    assert status["Seccomp"].strip() == "2", status  # podman's default profile
    revisions = platform.describe_service("zyg-seccomp")["revisions"]
    mode = next(one["start_mode"] for one in revisions if one["percent"])
    assert mode["mode"] == "container", mode
    assert "asks for the default seccomp profile, which the engine applies" in mode["reason"]
    platform.run("services", "delete", "zyg-seccomp", "-q", check=True, timeout=60)


def test_the_container_coldstart_benchmark_runs_with_the_zygote(tmp_path: Path) -> None:
    """bench/container_coldstart.py --zygote still runs (one run: not a measurement; the
    benchmark itself checks that the further instance was forked from the zygote)."""
    ensure_base_image()
    output = tmp_path / "container-coldstart.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "container_coldstart.py"), "--runs", "1", "--zygote"]
        + ["--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert len(result["zygote_first_ms"]) == len(result["zygote_further_ms"]) == 1
    assert result["zygote_further_median_ms"] > 0 and result["podman_run_median_ms"] > 0


def test_an_image_the_zygote_cannot_run_leaves_no_root_behind(
    zygote_platform: Platform, tmp_path: Path
) -> None:
    """Its root was made to read its command there, then removed: a container holding the
    image would keep podman from deleting it once the service goes."""
    app = tmp_path / "plain"
    app.mkdir()
    (app / "main.py").write_text((APPS / "container_app" / "main.py").read_text())
    (app / "Dockerfile").write_text(
        f'FROM {BASE_IMAGE}\nCOPY main.py /main.py\nCMD ["python3", "/main.py"]\n'
    )
    platform = zygote_platform
    platform.deploy_ok("ctr-plain", app)
    assert platform.request("ctr-plain", "GET", "/").json()["port"] == "8080"
    (revision,) = platform.describe_service("ctr-plain")["revisions"]
    mode = revision["start_mode"]
    assert mode["mode"] == "container", mode
    assert "not forked from a zygote: a zygote cannot run its command" in mode["reason"], mode
    names = [_name(container) for container in containers_of(platform.home)]
    assert not [name for name in names if name.startswith("homerun-root-ctr-plain-")], names


def test_a_killed_daemons_image_root_is_removed_at_its_next_start(
    tmp_path: Path, venv_cache: Path
) -> None:
    """SIGKILL leaves the root container mounted (and the zygote's instances, which the next
    start ends as any leftover instance); the next daemon removes it and makes a new one."""
    ensure_base_image()
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text((APPS / "flask_seed" / "main.py").read_text())
    (app / "Dockerfile").write_text(FLASK_DOCKERFILE)
    home = tmp_path / "home"
    try:
        with running_platform(home, venv_cache, {"stop-grace-seconds": 3}) as platform:
            platform.deploy_ok("zyg-left", app)
            (left,) = containers_of(home)
            platform.kill()
            assert containers_of(home) == [left]  # nothing removed it
            platform.start()
            assert left not in containers_of(home)
            assert platform.request("zyg-left", "GET", "/").json() == {"hello": "world"}
            (revision,) = platform.describe_service("zyg-left")["revisions"]
            assert revision["start_mode"]["mode"] == "zygote", revision["start_mode"]
            (made,) = containers_of(home)
            assert _name(made).startswith("homerun-root-") and made != left
    finally:
        remove_containers(home)
