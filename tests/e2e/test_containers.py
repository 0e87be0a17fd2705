"""Dockerfiles beyond the engine-less subset, built with podman and run as containers: the
instance contract, loopback-only ports, bad inputs, and nothing left behind."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from cloudcoil.models.knative_serving.serving import v1 as knative
from fakes import free_port

from homerun.knative import parse_service

from .containers import (
    BASE_IMAGE,
    containers_of,
    containers_where,
    engine_platform_at,
    ensure_base_image,
    podman,
    remove_containers,
    run_as_a_pod,
)
from .harness import APPS, Platform, describe, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.containers, pytest.mark.slow]

# The seed's app in a container that is not a python image: pip runs in the build (through
# this machine's TLS proxy, with the CA bundle the base image got) and CMD is shell form.
FLASK_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
WORKDIR /srv
RUN pip install --no-cache-dir flask gunicorn
COPY main.py .
CMD exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app
"""


@pytest.fixture(scope="module")
def engine_platform(
    tmp_path_factory: pytest.TempPathFactory, venv_cache: Path
) -> Iterator[Platform]:
    home = tmp_path_factory.mktemp("containers") / "home"
    with engine_platform_at(home, venv_cache, {"stop-grace-seconds": 3}) as platform:
        yield platform


def report(platform: Platform, service: str) -> dict[str, object]:
    response = platform.request(service, "GET", "/")
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_apt_get_multi_stage_and_user_build_with_podman_and_run_as_a_container(
    engine_platform: Platform,
) -> None:
    result = engine_platform.deploy_ok("ctr", APPS / "container_app")
    output = result.stdout + result.stderr
    assert "building with podman" in output
    assert "Dockerfile:3: `FROM localhost/homerun-test-debian:bookworm AS build`" in output
    answer = report(engine_platform, "ctr")
    assert answer["jq"] and str(answer["jq"]).startswith("jq-")  # apt-get installed it
    assert answer["stage"] == "built in stage one"  # COPY --from the first stage
    assert answer["uid"] == 4321  # USER app
    assert answer["cwd"] == "/app"
    assert answer["port"] == "8080"  # PORT is the container's port
    assert answer["k_service"] == "ctr"
    described = engine_platform.describe_service("ctr")
    (revision,) = described["revisions"]
    assert revision["start_mode"]["mode"] == "container", revision
    assert answer["k_revision"] == revision["name"]
    status = engine_platform.run("status", check=True).stdout
    assert "containers: podman" in status
    assert "each container in a network namespace of its own" in status, status
    # In a network namespace of its own (homerun runs as root here): nothing published, so the
    # engine wrote no forwarding rule that could outlive the container.
    assert "in a network namespace of its own" in revision["start_mode"]["reason"], revision
    home = engine_platform.home
    (container,) = containers_of(home)
    network = subprocess.run(
        [*podman(), "inspect", "--format", "{{.HostConfig.NetworkMode}}", container],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert network.startswith("ns:/proc/"), network
    ports = subprocess.run(
        [*podman(), "port", container], capture_output=True, text=True, check=True
    ).stdout
    assert ports.strip() == "", ports
    assert answer["interfaces"] in (["lo"], ["lo", "tap0"]), answer  # tap0: slirp4netns
    # The metadata server listens on its loopback: the instance learns who it runs as.
    assert str(answer["account"]).startswith("ctr@"), answer  # the service's own account
    logs = engine_platform.run("logs", "read", "ctr", "--limit", "50", check=True).stdout
    assert "listening on 8080" in logs  # the container's stdout is the instance's log


def test_shell_form_cmd_pip_port_env_and_memory(engine_platform: Platform, tmp_path: Path) -> None:
    app = tmp_path / "flask_container"
    app.mkdir()
    (app / "main.py").write_text((APPS / "flask_seed" / "main.py").read_text())
    (app / "Dockerfile").write_text(FLASK_DOCKERFILE)
    engine_platform.deploy_ok(
        "ctr-flask", app, "--port", "9090", "--memory", "256Mi", "--set-env-vars", "MODE=x"
    )
    response = engine_platform.request("ctr-flask", "GET", "/")
    assert response.status_code == 200, response.text
    assert response.json() == {"hello": "world"}
    assert response.headers.get("server", "").startswith("gunicorn")
    (container,) = [c for c in containers_of(engine_platform.home) if "ctr-flask" in _name(c)]
    inspected = json.loads(
        subprocess.run(
            [*podman(), "inspect", container], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert inspected["HostConfig"]["Memory"] == 256 * 1024 * 1024
    env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env["PORT"] == "9090" and env["MODE"] == "x" and env["K_SERVICE"] == "ctr-flask"
    assert "HOMERUN_E2E_MARKER" not in env  # the daemon's own environment stays out


def test_the_loaders_variables_reach_the_container_not_podman(engine_platform: Platform) -> None:
    # podman runs as root on the host: an env var the loader, Go or the containers libraries
    # act on (LD_PRELOAD, CONTAINERS_CONF...) must reach the container, not podman's own
    # environment. LD_DEBUG_OUTPUT shows who read it: each process writes PATH.PID.
    trace = Path(f"/tmp/homerun-ld-trace-{uuid.uuid4().hex}")
    path = "/opt/tools/bin:/usr/local/bin:/usr/bin:/bin"
    assignments = f"LD_DEBUG=files,LD_DEBUG_OUTPUT={trace},PATH={path}"
    engine_platform.deploy_ok("ctr-ld", APPS / "container_app", "--set-env-vars", assignments)
    try:
        assert engine_platform.request("ctr-ld", "GET", "/").status_code == 200
        written = sorted(trace.parent.glob(f"{trace.name}.*"))
        assert written == [], f"podman read the deploy's LD_DEBUG_OUTPUT: {written}"
        (container,) = [c for c in containers_of(engine_platform.home) if "ctr-ld" in _name(c)]
        inspected = json.loads(
            subprocess.run(
                [*podman(), "inspect", container], capture_output=True, text=True, check=True
            ).stdout
        )[0]
        env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
        # The container has them as given (PATH too: not the daemon's).
        assert env["LD_DEBUG_OUTPUT"] == str(trace) and env["PATH"] == path, env
    finally:
        engine_platform.run("services", "delete", "ctr-ld", "-q", timeout=60)
        for leftover in trace.parent.glob(f"{trace.name}.*"):
            leftover.unlink()


def test_builds_submit_and_deploy_image_with_the_engine(engine_platform: Platform) -> None:
    built = engine_platform.run(
        "builds", "submit", str(APPS / "container_app"), "--tag", "localhost/ctr:v1", timeout=600
    )
    assert built.returncode == 0, describe(built)
    deployed = engine_platform.run(
        "deploy", "ctr-image", "--image", "localhost/ctr:v1", "--allow-unauthenticated"
    )
    assert deployed.returncode == 0, describe(deployed)
    assert report(engine_platform, "ctr-image")["uid"] == 4321
    # --command and --args replace the image's ENTRYPOINT and CMD (Kubernetes semantics).
    updated = engine_platform.run(
        "deploy",
        "ctr-image",
        "--image",
        "localhost/ctr:v1",
        "--command",
        "sh",
        "--args=-c,GREETING=from-command exec python3 main.py",
    )
    assert updated.returncode == 0, describe(updated)
    answer = report(engine_platform, "ctr-image")
    assert answer["greeting"] == "from-command" and answer["uid"] == 4321
    # describe says what runs: the override, not the image's ENTRYPOINT and CMD
    described = engine_platform.run("services", "describe", "ctr-image")
    assert described.returncode == 0, describe(described)
    assert (
        "entrypoint (--command and --args, in place of the image's ENTRYPOINT and CMD): "
        "sh -c GREETING=from-command exec python3 main.py"
    ) in described.stdout, described.stdout
    # --args alone go after the image's ENTRYPOINT (python3), in place of its CMD.
    args_only = engine_platform.run(
        "deploy", "ctr-args", "--image", "localhost/ctr:v1", "--args", "main.py,from-args"
    )
    assert args_only.returncode == 0, describe(args_only)
    described = engine_platform.run("services", "describe", "ctr-args", check=True)
    assert (
        "entrypoint (the image's ENTRYPOINT, then --args in place of its CMD): "
        "python3 main.py from-args"
    ) in described.stdout, described.stdout
    engine_platform.run("services", "delete", "ctr-args", check=True)


def test_a_failing_step_and_a_crashing_container_keep_the_revision_serving(
    engine_platform: Platform, tmp_path: Path
) -> None:
    engine_platform.ensure_deployed("ctr", APPS / "container_app")
    app = tmp_path / "broken"
    app.mkdir()
    (app / "main.py").write_text("print('never runs')\n")
    (app / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nCOPY main.py /main.py\nRUN apt-get install -y no-such-package-xyz\n"
        'CMD ["python3", "/main.py"]\n'
    )
    failed = engine_platform.deploy("ctr", app)
    assert failed.returncode == 1
    assert "Dockerfile:3: `RUN apt-get install -y no-such-package-xyz` failed" in failed.stderr
    assert "Unable to locate package" in failed.stdout + failed.stderr

    (app / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN true\n"
        'CMD ["python3", "-c", "import sys; print(\'boom: no DB_URL\'); sys.exit(3)"]\n'
    )
    crashed = engine_platform.deploy("ctr", app)
    assert crashed.returncode == 1
    assert "boom: no DB_URL" in crashed.stderr and "exit code 3" in crashed.stderr
    assert report(engine_platform, "ctr")["uid"] == 4321  # the first revision still serves


def test_deleting_a_service_removes_the_image_only_it_ran(
    engine_platform: Platform, tmp_path: Path
) -> None:
    app = tmp_path / "own_image"
    app.mkdir()
    (app / "main.py").write_text((APPS / "container_app" / "main.py").read_text())
    # Unique to this run (a tmp_path name repeats across sessions, and an image another
    # session left with it would never go): podman's cache cannot share the image.
    marker = f"marker-{uuid.uuid4().hex}"
    (app / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo {marker} > /marker\nCOPY main.py /main.py\n"
        'CMD ["python3", "/main.py"]\n'
    )
    engine_platform.ensure_deployed("ctr", APPS / "container_app")
    engine_platform.deploy_ok("ctr-own", app)
    assert _image_with_marker(marker)
    deleted = engine_platform.run("services", "delete", "ctr-own", "-q")
    assert deleted.returncode == 0, describe(deleted)
    deadline = time.monotonic() + 60
    while _image_with_marker(marker):
        assert time.monotonic() < deadline, "the deleted service's image is still there"
        time.sleep(0.5)
    assert report(engine_platform, "ctr")["uid"] == 4321  # other services' images stay


def _build_tags() -> list[str]:
    """The tags of images homes built (each home has its repository: homerun-build-KEY).

    `podman images` fails now and then while another podman removes an image (podman issue
    24800, "podman images with concurrent removal"): homerun removes images as this lists, so
    a failed listing is tried again, and its error shown if it keeps failing."""
    for _ in range(5):
        listed = subprocess.run(
            [
                *podman(),
                "images",
                "--filter",
                "reference=localhost/homerun-build-*",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ],  # fmt: skip
            capture_output=True,
            text=True,
            check=False,
        )
        if listed.returncode == 0:
            break
        time.sleep(1)
    assert listed.returncode == 0, f"podman images: exit {listed.returncode}: {listed.stderr}"
    return [tag for tag in listed.stdout.split() if tag.startswith("localhost/homerun-build-")]


def _image_with_marker(marker: str) -> bool:
    """Whether an image homerun built still has /marker = marker (its own layer)."""
    for tag in _build_tags():
        history = subprocess.run(
            [*podman(), "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if marker in history:
            return True
    return False


def test_deleting_the_service_removes_its_containers(engine_platform: Platform) -> None:
    engine_platform.ensure_deployed("ctr-gone", APPS / "container_app")
    assert [c for c in containers_of(engine_platform.home) if "ctr-gone" in _name(c)]
    deleted = engine_platform.run("services", "delete", "ctr-gone", "-q")
    assert deleted.returncode == 0, describe(deleted)
    # Python as PID 1 ignores SIGTERM (no handler), as in any container: the SIGKILL after
    # the stop grace (3 s here) ends it, and the container is removed.
    deadline = time.monotonic() + 30
    while [c for c in containers_of(engine_platform.home) if "ctr-gone" in _name(c)]:
        assert time.monotonic() < deadline, "the container of a deleted service is still there"
        time.sleep(0.2)


def _name(container: str) -> str:
    return subprocess.run(
        [*podman(), "inspect", "--format", "{{.Name}}", container],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def test_containers_a_killed_daemon_left_are_removed_at_its_next_start(
    tmp_path: Path, venv_cache: Path
) -> None:
    ensure_base_image()
    home = tmp_path / "home"
    try:
        with running_platform(home, venv_cache, {"stop-grace-seconds": 3}) as platform:
            platform.deploy_ok("ctr-left", APPS / "container_app")
            assert len(containers_of(home)) == 1
            platform.kill()  # SIGKILL: no stop of anything
            assert len(containers_of(home)) == 1  # conmon keeps the container running
            platform.start()
            assert containers_of(home) == []
            # The revision comes back as a new container, reachable as before.
            assert report(platform, "ctr-left")["uid"] == 4321
    finally:
        remove_containers(home)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """Debian's docker-registry on a loopback port of its own: REGISTRY_HOST:PORT."""
    program = shutil.which("docker-registry")
    if program is None:
        pytest.skip("docker-registry is not installed (./scripts/setup containers installs it)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        [program, "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "docker-registry did not answer"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_push_then_pull_and_run_as_a_knative_pod_would(
    engine_platform: Platform, registry: str
) -> None:
    image = f"{registry}/homerun-e2e/ctr:v1"
    built = engine_platform.run(
        "builds", "submit", str(APPS / "container_app"), "--tag", image, timeout=600
    )
    assert built.returncode == 0, describe(built)
    pushed = engine_platform.run("images", "push", image)
    assert pushed.returncode == 0, describe(pushed)
    first, pinned = pushed.stdout.strip().splitlines()
    digest = first.rpartition(": ")[2]
    assert first == f"Pushed [{image}]: {digest}" and digest.startswith("sha256:")
    assert pinned == f"{registry}/homerun-e2e/ctr@{digest}"
    # The registry has it under that digest.
    manifest = httpx.get(
        f"http://{registry}/v2/homerun-e2e/ctr/manifests/{digest}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },  # fmt: skip
        trust_env=False,
    )
    assert manifest.status_code == 200, manifest.text
    # Pulled back by digest and run as a Knative pod runs it: PORT=8080 and the K_* env.
    command = podman()
    subprocess.run(
        [*command, "pull", "--tls-verify=false", pinned], check=True, capture_output=True
    )
    env = {
        "PORT": "8080",
        "K_SERVICE": "ctr",
        "K_REVISION": "ctr-00001-pod",
        "K_CONFIGURATION": "ctr",
    }
    try:
        with run_as_a_pod(pinned, env, f"homerun-e2e-pod-{uuid.uuid4().hex[:8]}") as answer:
            assert answer["uid"] == 4321 and answer["port"] == "8080"
            assert answer["k_service"] == "ctr" and answer["stage"] == "built in stage one"
    finally:
        subprocess.run([*command, "rmi", pinned], capture_output=True)


def test_an_image_built_without_the_engine_is_not_pushed(
    engine_platform: Platform, tmp_path: Path
) -> None:
    built = engine_platform.run(
        "builds", "submit", str(APPS / "flask_seed"), "--tag", "127.0.0.1:1/seed:v1"
    )
    assert built.returncode == 0, describe(built)
    refused = engine_platform.run("images", "push", "127.0.0.1:1/seed:v1")
    assert refused.returncode == 1
    assert "built without a container engine" in refused.stderr
    assert "Only images podman built" in refused.stderr


def _registry_digest(registry: str, repository: str, reference: str) -> str:
    """The digest the registry serves `repository:reference` under (Docker-Content-Digest)."""
    response = httpx.get(
        f"http://{registry}/v2/{repository}/manifests/{reference}",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },  # fmt: skip
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def test_export_references_the_pushed_digest_and_runs_as_a_knative_pod(
    engine_platform: Platform, registry: str, tmp_path: Path
) -> None:
    """`services export`: the serving revision as a Knative Service whose image is the one
    the registry serves, by digest; pulled back and run as a Knative pod runs it, it answers
    as homerun's instance does; `services replace` of the file changes nothing."""
    tagged = f"{registry}/homerun-e2e/exp:v1"
    built = engine_platform.run(
        "builds", "submit", str(APPS / "container_app"), "--tag", tagged, timeout=600
    )
    assert built.returncode == 0, describe(built)
    deployed = engine_platform.run(
        "deploy", "exp", "--image", tagged, "--allow-unauthenticated",
        "--set-env-vars", "GREETING=hello from homerun", "--concurrency", "7",
        "--max-instances", "3", timeout=300,
    )  # fmt: skip
    assert deployed.returncode == 0, describe(deployed)
    served = report(engine_platform, "exp")

    # Never pushed (unless an earlier test pushed the same image under another name): export
    # says so, and how.
    refused = engine_platform.run("services", "export", "exp")
    if refused.returncode != 0:
        assert "never pushed to a registry" in refused.stderr, describe(refused)
        assert f"homerun images push {tagged}" in refused.stderr

    pushed = engine_platform.run("images", "push", tagged)
    assert pushed.returncode == 0, describe(pushed)
    pinned = pushed.stdout.strip().splitlines()[-1]
    exported = engine_platform.run("services", "export", "exp", check=True).stdout
    document = yaml.safe_load(exported)
    container = document["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == pinned
    digest = pinned.rpartition("@")[2]
    assert _registry_digest(registry, "homerun-e2e/exp", "v1") == digest
    assert _registry_digest(registry, "homerun-e2e/exp", digest) == digest
    assert document["spec"]["template"]["spec"]["containerConcurrency"] == 7
    annotations = document["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/max-scale"] == "3"
    assert not any(key.startswith("homerun.dev/") for key in annotations)
    # Knative's CRD schema (strictly typed, no unknown field) and homerun's reading of it.
    crd = knative.Service.model_validate(document, strict=True)
    assert crd.model_dump(mode="json", by_alias=True, exclude_unset=True) == document
    parse_service(document)
    cloud_run = engine_platform.run("services", "describe", "exp", "--format", "export")
    assert cloud_run.returncode == 0, describe(cloud_run)
    cloud_document = yaml.safe_load(cloud_run.stdout)
    assert cloud_document["spec"]["template"]["spec"]["containers"][0]["image"] == pinned
    assert cloud_document["spec"]["template"]["metadata"]["annotations"] == {
        "autoscaling.knative.dev/maxScale": "3"
    }

    # Pulled by the exported digest and run as a Knative pod runs it: PORT=8080, the K_* env,
    # and the document's env.
    command = podman()
    subprocess.run(
        [*command, "pull", "--tls-verify=false", container["image"]],
        check=True,
        capture_output=True,
    )
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    env |= {"PORT": "8080", "K_SERVICE": "exp", "K_CONFIGURATION": "exp"}
    env["K_REVISION"] = str(served["k_revision"])
    name = f"homerun-e2e-export-{uuid.uuid4().hex[:8]}"
    try:
        with run_as_a_pod(container["image"], env, name) as answer:
            # greeting, uid, stage, cwd, port, K_* alike; the network and the metadata server
            # are the pod's (here a namespace of the test's, and none)
            platform_only = ("interfaces", "account")
            assert {key: value for key, value in answer.items() if key not in platform_only} == {
                key: value for key, value in served.items() if key not in platform_only
            }
        assert served["greeting"] == "hello from homerun"
    finally:
        subprocess.run([*command, "rmi", container["image"]], capture_output=True)

    # The exported file, given back to homerun, is the revision it came from.
    path = tmp_path / "exp.yaml"
    path.write_text(exported)
    replaced = engine_platform.run("services", "replace", str(path), timeout=300)
    assert replaced.returncode == 0, describe(replaced)
    revision = served["k_revision"]
    assert f"The template is unchanged: {revision} stays" in replaced.stdout, describe(replaced)
    assert report(engine_platform, "exp")["k_revision"] == served["k_revision"]


# -- jobs whose tasks are containers ---------------------------------------------------------

# A task beyond the engine-less subset (RUN, a shell script as CMD): it says which task and
# attempt it is and its memory limit, and task 1 fails its first attempt.
TASK_SCRIPT = """\
#!/bin/sh
v1=/sys/fs/cgroup/memory/memory.limit_in_bytes
limit=$(cat $v1 2>/dev/null || cat /sys/fs/cgroup/memory.max)
echo "task $CLOUD_RUN_TASK_INDEX attempt $CLOUD_RUN_TASK_ATTEMPT of $CLOUD_RUN_TASK_COUNT" \
     "job $CLOUD_RUN_JOB execution $CLOUD_RUN_EXECUTION memory $limit marker $(cat /marker)"
if [ "$CLOUD_RUN_TASK_INDEX" = 1 ] && [ "$CLOUD_RUN_TASK_ATTEMPT" = 0 ]; then
    echo "task 1 fails its first attempt" >&2
    exit 7
fi
"""
TASK_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN echo built-by-podman > /marker
COPY task.sh /task.sh
CMD ["sh", "/task.sh"]
"""


def _job_execution(output: str) -> str:
    return output.split("Execution [", 1)[1].split("]", 1)[0]


def test_a_job_from_an_image_podman_built_runs_tasks_as_containers_and_retries(
    engine_platform: Platform, tmp_path: Path
) -> None:
    app = tmp_path / "task_image"
    app.mkdir()
    (app / "task.sh").write_text(TASK_SCRIPT)
    (app / "Dockerfile").write_text(TASK_DOCKERFILE)
    built = engine_platform.run(
        "builds", "submit", str(app), "--tag", "localhost/ctr-task:v1", timeout=600
    )
    assert built.returncode == 0, describe(built)
    created = engine_platform.run(
        "jobs", "create", "ctr-tasks", "--image", "localhost/ctr-task:v1", "--tasks", "3",
        "--max-retries", "2", "--memory", "256Mi",
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    assert "Image localhost/ctr-task:v1 is localhost/ctr-task@sha256:" in (
        created.stdout + created.stderr
    )
    shown = engine_platform.run("jobs", "describe", "ctr-tasks", check=True).stdout
    assert "Image:         localhost/ctr-task@sha256:" in shown, shown
    assert "Runs as:       containers of sha256:" in shown, shown
    executed = engine_platform.run("jobs", "execute", "ctr-tasks", "--wait", timeout=300)
    assert executed.returncode == 0, describe(executed)
    assert "3 tasks completed successfully after 1 retr" in executed.stdout, executed.stdout
    execution = _job_execution(executed.stdout)
    logs = engine_platform.run(
        "jobs", "logs", "read", "ctr-tasks", "--execution", execution, "--limit", "100"
    )  # fmt: skip
    assert logs.returncode == 0, describe(logs)
    memory = 256 * 1024 * 1024
    for index, attempt in ((0, 0), (1, 0), (1, 1), (2, 0)):
        assert (
            f"task {index} attempt {attempt} of 3 job ctr-tasks execution {execution} "
            f"memory {memory} marker built-by-podman"
        ) in logs.stdout, logs.stdout
    assert "task 1 fails its first attempt" in logs.stdout  # stderr is the task's log too
    assert "Task 1 attempt 0 failed (exit code 7" in logs.stdout, logs.stdout
    described = json.loads(
        engine_platform.run(
            "jobs", "executions", "describe", execution, "--format", "json", check=True
        ).stdout
    )
    assert (described["succeeded"], described["retries"]) == (3, 1), described
    assert not [c for c in containers_of(engine_platform.home) if "ctr-tasks" in _name(c)]


def test_a_job_built_with_podman_from_source_times_out_and_cancels_its_containers(
    engine_platform: Platform, tmp_path: Path
) -> None:
    app = tmp_path / "sleeper"
    app.mkdir()
    (app / "Dockerfile").write_text(
        f'FROM {BASE_IMAGE}\nRUN true\nCMD ["sh", "-c", "echo sleeping; exec sleep 600"]\n'
    )
    created = engine_platform.run(
        "jobs", "create", "ctr-sleeper", "--source", str(app), "--task-timeout", "3s",
        "--max-retries", "0", timeout=600,
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    assert "building with podman" in created.stdout + created.stderr
    timed_out = engine_platform.run("jobs", "execute", "ctr-sleeper", "--wait", timeout=120)
    assert timed_out.returncode == 1, describe(timed_out)
    assert "timed out" in timed_out.stdout + timed_out.stderr, describe(timed_out)
    assert not [c for c in containers_of(engine_platform.home) if "ctr-sleeper" in _name(c)]
    # Cancel: the running container stops (sleep as PID 1 ignores SIGTERM: the SIGKILL after
    # the stop grace, 3 s here, ends it).
    updated = engine_platform.run("jobs", "update", "ctr-sleeper", "--task-timeout", "10m")
    assert updated.returncode == 0, describe(updated)
    started = engine_platform.run("jobs", "execute", "ctr-sleeper", check=True)
    execution = _job_execution(started.stdout)
    deadline = time.monotonic() + 60
    while not [c for c in containers_of(engine_platform.home) if "ctr-sleeper" in _name(c)]:
        assert time.monotonic() < deadline, engine_platform.run(
            "jobs", "logs", "read", "ctr-sleeper", "--limit", "30"
        ).stdout
        time.sleep(0.2)
    engine_platform.run("jobs", "executions", "cancel", execution, check=True)
    deadline = time.monotonic() + 30
    while [c for c in containers_of(engine_platform.home) if "ctr-sleeper" in _name(c)]:
        assert time.monotonic() < deadline, "the cancelled task's container is still there"
        time.sleep(0.2)


def test_a_job_of_an_image_podman_has_fails_with_its_last_lines(
    engine_platform: Platform,
) -> None:
    # The base image is in podman's storage only, not in homerun's image store.
    created = engine_platform.run(
        "jobs", "create", "ctr-exits", "--image", BASE_IMAGE, "--command", "sh",
        "--args=-c,echo one; echo two; echo three; exit 4", "--max-retries", "0",
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    failed = engine_platform.run("jobs", "execute", "ctr-exits", "--wait", timeout=120)
    assert failed.returncode == 1, describe(failed)
    output = failed.stdout + failed.stderr
    assert "exit code 4" in output and "its last lines: one | two | three" in output, output
    unknown = engine_platform.run("jobs", "create", "ctr-none", "--image", "localhost/no-such:v9")
    assert unknown.returncode == 1
    assert "there is no image localhost/no-such:v9 in homerun's image store" in unknown.stderr
    assert "podman has no image localhost/no-such:v9 either" in unknown.stderr, unknown.stderr


def test_a_prebuilt_image_with_its_own_port_and_shell_form_entrypoint(
    engine_platform: Platform, tmp_path: Path
) -> None:
    """An image built by hand with podman (not by homerun), its shell-form ENTRYPOINT
    listening on a port of its own: `deploy --image IMAGE --port PORT` runs it, PORT is that
    port inside, and the router reaches it."""
    with hand_built_image(tmp_path, "ENTRYPOINT exec python3 /main.py") as image:
        deployed = engine_platform.run(
            "deploy", "ctr-own-port", "--image", image, "--port", "9091",
            "--allow-unauthenticated",
        )  # fmt: skip
        assert deployed.returncode == 0, describe(deployed)
        answer = report(engine_platform, "ctr-own-port")
        assert answer["port"] == "9091" and answer["k_service"] == "ctr-own-port"
        engine_platform.run("services", "delete", "ctr-own-port", "-q", check=True, timeout=60)


@contextlib.contextmanager
def hand_built_image(tmp_path: Path, command: str) -> Iterator[str]:
    """The container app in an image podman builds by hand (not homerun), run by `command`
    (its CMD or ENTRYPOINT line); removed afterwards."""
    context = tmp_path / "own"
    context.mkdir()
    (context / "main.py").write_text((APPS / "container_app" / "main.py").read_text())
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY main.py /main.py\n{command}\n")
    image = f"localhost/hand-built-{uuid.uuid4().hex[:12]}:v1"
    built = subprocess.run(
        [*podman(), "build", "--tag", image, str(context)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    try:
        yield image
    finally:
        # The services deleted, their containers stop in the background: removed once they
        # are gone, not forced away under a daemon still stopping them (which left records
        # that `homerun down` then found).
        deadline = time.monotonic() + 60
        while containers_of_image(image) and time.monotonic() < deadline:
            time.sleep(0.5)
        subprocess.run([*podman(), "rmi", "--force", image], capture_output=True, check=False)


def containers_of_image(image: str) -> list[str]:
    """The containers of `image`, by its ID: homerun runs an image by its ID, which podman's
    `ancestor=NAME` filter does not match."""
    found = subprocess.run(
        [*podman(), "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        return []
    return containers_where(f"ancestor={found.stdout.strip()}")


def nat_rules() -> list[str]:
    saved = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True)
    return sorted(line for line in saved.stdout.splitlines() if line.startswith("-A "))


@pytest.mark.skipif(shutil.which("iptables-save") is None, reason="iptables is not installed")
def test_each_container_has_a_network_of_its_own_even_on_the_routers_port(
    engine_platform: Platform, tmp_path: Path
) -> None:
    """As an attacker in one container would try: another service's container port on the
    loopback is not there, and the engine wrote no forwarding rule (one that outlives its
    container sends a later connection to that port nowhere). A container port equal to the
    router's own is the container's: the router's listener stays out of that namespace."""
    with hand_built_image(tmp_path, 'CMD ["python3", "/main.py"]') as image:
        rules = nat_rules()
        router_port = str(engine_platform.port)
        for service, port in (("ctr-net-a", router_port), ("ctr-net-b", "8080")):
            deployed = engine_platform.run(
                "deploy", service, "--image", image, "--port", port, "--allow-unauthenticated"
            )
            assert deployed.returncode == 0, describe(deployed)
        assert report(engine_platform, "ctr-net-a")["port"] == router_port

        def connect_from(service: str, address: str) -> str:
            response = engine_platform.request(service, "GET", "/", params={"connect": address})
            assert response.status_code == 200, response.text
            return str(response.json())

        # b listens on 8080 in its namespace: from a, 127.0.0.1:8080 is nothing.
        assert connect_from("ctr-net-a", "127.0.0.1:8080").startswith("error"), "reached b"
        # b reaches the router's port on its own loopback (the service URLs); a has it itself.
        assert connect_from("ctr-net-b", f"127.0.0.1:{router_port}") == "connected"
        assert nat_rules() == rules
        for service in ("ctr-net-a", "ctr-net-b"):
            engine_platform.run("services", "delete", service, "-q", check=True, timeout=60)


def test_a_container_whose_stop_the_daemon_cuts_short_goes_with_it(
    tmp_path: Path, venv_cache: Path
) -> None:
    """`services delete` stops an instance in the background: SIGTERM, which the app ignores
    (PID 1 of its container, without a handler), then SIGKILL once the grace is over. A
    `homerun down` within the grace cuts that stop short; the container goes anyway, as what
    a process instance leaves does (engine_platform_at checks that none of its home is left)."""
    home = tmp_path / "home"
    with (
        hand_built_image(tmp_path, 'CMD ["python3", "/main.py"]') as image,
        engine_platform_at(home, venv_cache, {"stop-grace-seconds": 60}) as platform,
    ):
        deployed = platform.run(
            "deploy", "ctr-cut-short", "--image", image, "--allow-unauthenticated"
        )
        assert deployed.returncode == 0, describe(deployed)
        assert len(containers_of(home)) == 1
        platform.run("services", "delete", "ctr-cut-short", "-q", check=True, timeout=60)
        assert len(containers_of(home)) == 1  # still in its grace
