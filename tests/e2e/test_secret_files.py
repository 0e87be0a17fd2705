"""Secrets as files and in-memory volumes, as Cloud Run mounts them, through a real daemon with
the sandbox on: the app (tests/apps/secret_files) reads its key from /secrets/api-key, cannot
change it, sees a new `latest` version in its next instance, and caches in /cache, whose size
limit holds; another service sees neither; the value is in no description, log or store file.
The same through `services replace` of the Knative YAML; and without a sandbox the deploy is
refused, saying why and what to do.

These need root and bubblewrap (the sandbox's user per revision); elsewhere they are skipped."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from homerun.runtime.sandbox import probe

from .harness import APPS, Platform, describe, running_platform, wait_until_dead

pytestmark = pytest.mark.e2e

APP = APPS / "secret_files"
JOB_APP = APPS / "secret_files_job"
FIRST = "first-key-" + os.urandom(4).hex()
SECOND = "second-key-" + os.urandom(4).hex()
MOUNT_FLAGS = (
    "--set-secrets",
    "/secrets/api-key=api-key:latest",
    "--add-volume",
    "name=cache,type=in-memory,size-limit=2Mi",
    "--add-volume-mount",
    "volume=cache,mount-path=/cache",
)


def _secret(platform: Platform, tmp: Path, *command: str, value: str) -> None:
    data = tmp / "value"
    data.write_text(value)
    platform.run("secrets", *command, "--data-file", str(data), check=True)
    data.unlink()


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """A daemon with `sandbox: on` serving `keeper` (the secret file and the volume) and
    `peeker` (the same app, neither)."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox's own user per revision needs homerun to run as root")
    sandbox, said = probe("auto", Path("/nonexistent"))
    if sandbox is None:
        pytest.skip(said)
    home = tmp_path_factory.mktemp("mounted") / "home"
    with running_platform(home, venv_cache, {"sandbox": "on", "stop-grace-seconds": 3}) as own:
        _secret(own, home.parent, "create", "api-key", value=FIRST)
        own.deploy_ok("keeper", APP, *MOUNT_FLAGS)
        own.deploy_ok("peeker", APP)
        yield own


def get(platform: Platform, service: str, path: str = "/") -> dict[str, Any]:
    response = platform.request(service, "GET", path)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def post(platform: Platform, service: str, path: str) -> dict[str, Any]:
    response = platform.request(service, "POST", path)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_secret_is_a_read_only_file_in_a_folder_of_its_own(mounted: Platform) -> None:
    seen = get(mounted, "keeper")
    assert seen["api_key"] == FIRST
    assert seen["folder"] == ["api-key"]
    tampered = post(mounted, "keeper", "/tamper")
    assert not any(attempt["ok"] for attempt in tampered.values()), tampered
    assert tampered["overwrite"]["error"] == "Read-only file system"
    assert get(mounted, "keeper")["api_key"] == FIRST


def test_the_volume_holds_writes_up_to_its_size_limit_and_the_instance_goes_on(
    mounted: Platform,
) -> None:
    assert post(mounted, "keeper", "/cache/page?kib=1024") == {"ok": True}
    refused = post(mounted, "keeper", "/cache/more?kib=1536")
    assert refused == {"ok": False, "error": "No space left on device"}
    assert get(mounted, "keeper", "/cache")["files"] == {"page": 1024 * 1024}
    assert get(mounted, "keeper")["api_key"] == FIRST  # the same instance serves on


def test_another_service_sees_neither_the_secret_nor_the_volume(mounted: Platform) -> None:
    get(mounted, "keeper")
    # The keeper instance's pid on the host (the peeker's PID namespace does not hold it).
    keeper_pid = mounted.describe_service("keeper")["revisions"][0]["instances"][0]["pid"]
    for path in ("/secrets/api-key", "/cache/page", f"/proc/{keeper_pid}/root/secrets/api-key"):
        answer = get(mounted, "peeker", f"/read?path={path}")
        assert answer["ok"] is False, (path, answer)
    assert get(mounted, "peeker", "/cache") == {"error": "No such file or directory"}


def test_the_value_is_in_no_description_log_or_store_file(mounted: Platform) -> None:
    outputs = [
        mounted.run("services", "describe", "keeper", *form, check=True).stdout
        for form in ([], ["--format", "yaml"], ["--format", "summary-json"])
    ]
    image = f"gcr.io/project/keeper@sha256:{'ab' * 32}"
    outputs.append(mounted.run("services", "export", "keeper", "--image", image, check=True).stdout)
    outputs.append(mounted.run("logs", "read", "keeper", "--limit", "500", check=True).stdout)
    for output in outputs:
        assert FIRST not in output
    assert "/secrets/api-key: secret api-key:latest (read-only file)" in outputs[0]
    assert "/cache: in-memory volume cache, at most 2Mi" in outputs[0]
    template = yaml.safe_load(outputs[1])["spec"]["template"]["spec"]
    assert template["volumes"][0]["secret"] == {
        "secretName": "api-key",
        "items": [{"key": "latest", "path": "api-key"}],
    }
    leaks = []
    for path in mounted.home.rglob("*"):
        if path.is_file() and "secrets" not in path.relative_to(mounted.home).parts:
            if FIRST.encode() in path.read_bytes():
                leaks.append(path)
    assert not leaks


def test_a_new_latest_version_reaches_the_next_instance(mounted: Platform, tmp_path: Path) -> None:
    before = get(mounted, "keeper")
    _secret(mounted, tmp_path, "versions", "add", "api-key", value=SECOND)
    # An instance reads `latest` when it starts: the running one keeps its value.
    assert get(mounted, "keeper")["api_key"] == FIRST
    described = mounted.describe_service("keeper")
    pids = [instance["pid"] for instance in described["revisions"][0]["instances"]]
    assert pids, described
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # an instance of this test's own daemon
    for pid in pids:
        assert wait_until_dead(pid, 15)
    after = get(mounted, "keeper")
    assert after["instance"] != before["instance"] and after["revision"] == before["revision"]
    assert after["api_key"] == SECOND
    assert get(mounted, "keeper", "/cache")["files"] == {}  # a new instance, an empty volume


def test_services_replace_reads_the_volumes_of_the_knative_yaml(
    mounted: Platform, tmp_path: Path
) -> None:
    document = yaml.safe_load(
        mounted.run("services", "describe", "keeper", "--format", "yaml", check=True).stdout
    )
    template = document["spec"]["template"]
    template.get("metadata", {}).pop("name", None)
    spec = template["spec"]
    cache = next(volume for volume in spec["volumes"] if volume["name"] == "cache")
    cache["emptyDir"]["sizeLimit"] = "512Ki"
    spec["containers"][0]["volumeMounts"][0]["mountPath"] = "/etc/app-secrets"
    spec["containers"][0]["env"] = [{"name": "API_KEY_FILE", "value": "/etc/app-secrets/api-key"}]
    written = tmp_path / "keeper.yaml"
    written.write_text(yaml.safe_dump(document))
    replaced = mounted.run("services", "replace", str(written), timeout=300)
    assert replaced.returncode == 0, describe(replaced)
    assert get(mounted, "keeper")["api_key"] == SECOND
    assert post(mounted, "keeper", "/cache/page?kib=768")["ok"] is False
    assert post(mounted, "keeper", "/cache/page?kib=256") == {"ok": True}


def test_a_bad_mount_in_the_yaml_names_its_field_and_keeps_the_service(
    mounted: Platform, tmp_path: Path
) -> None:
    document = yaml.safe_load(
        mounted.run("services", "describe", "peeker", "--format", "yaml", check=True).stdout
    )
    spec = document["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "s", "secret": {"secretName": "api-key"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "s", "mountPath": "/proc/keys"}]
    written = tmp_path / "peeker.yaml"
    written.write_text(yaml.safe_dump(document))
    refused = mounted.run("services", "replace", str(written))
    assert refused.returncode != 0
    assert "spec.template.spec.containers[0].volumeMounts[0].mountPath" in refused.stderr
    assert get(mounted, "peeker", "/read?path=/secrets/api-key")["ok"] is False


def test_a_jobs_tasks_get_the_secret_file_and_the_volume(mounted: Platform) -> None:
    created = mounted.run(
        "jobs",
        "create",
        "signer",
        "--source",
        str(JOB_APP),
        "--set-secrets",
        "/secrets/signing-key=api-key:latest",
        "--add-volume",
        "name=scratch,type=in-memory,size-limit=1Mi",
        "--add-volume-mount",
        "volume=scratch,mount-path=/scratch",
        timeout=270,
    )
    assert created.returncode == 0, describe(created)
    executed = mounted.run("jobs", "execute", "signer", "--wait", timeout=180)
    assert executed.returncode == 0, describe(executed)
    logs = mounted.run("jobs", "logs", "read", "signer", "--limit", "100", check=True).stdout
    value = get(mounted, "keeper")["api_key"]  # the key's latest version, whichever it is now
    assert f"key sha256 {hashlib.sha256(value.encode()).hexdigest()}" in logs, logs
    assert "key not writable: Read-only file system" in logs
    assert f"staged {512 * 1024} bytes" in logs
    assert "over the limit refused: No space left on device" in logs
    assert value not in logs
    shown = mounted.run("jobs", "describe", "signer", "--format", "yaml", check=True).stdout
    assert value not in shown
    task = yaml.safe_load(shown)["spec"]["template"]["spec"]["template"]["spec"]
    assert task["containers"][0]["volumeMounts"][0]["mountPath"] == "/secrets"


def test_a_worker_pools_instances_get_the_secret_file_and_the_volume(mounted: Platform) -> None:
    deployed = mounted.run(
        "worker-pools",
        "deploy",
        "signers",
        "--source",
        str(JOB_APP),
        "--command",
        "sh,-c,python main.py && exec sleep 600",
        "--set-secrets",
        "/secrets/signing-key=api-key:latest",
        "--add-volume",
        "name=scratch,type=in-memory,size-limit=1Mi",
        "--add-volume-mount",
        "volume=scratch,mount-path=/scratch",
        timeout=270,
    )
    assert deployed.returncode == 0, describe(deployed)
    value = get(mounted, "keeper")["api_key"]
    expected = [
        f"key sha256 {hashlib.sha256(value.encode()).hexdigest()}",
        "key not writable: Read-only file system",
        "over the limit refused: No space left on device",
    ]
    deadline = time.monotonic() + 60
    logs = ""
    while time.monotonic() < deadline:
        logs = mounted.run("worker-pools", "logs", "read", "signers", "--limit", "100").stdout
        if all(line in logs for line in expected):
            break
        time.sleep(0.5)
    assert all(line in logs for line in expected), logs
    assert value not in logs
    mounted.run("worker-pools", "delete", "signers", "-q", check=True)


def test_without_a_sandbox_the_deploy_is_refused_saying_what_to_do(
    tmp_path: Path, venv_cache: Path
) -> None:
    with running_platform(tmp_path / "home", venv_cache, {"sandbox": "off"}) as plain:
        _secret(plain, tmp_path, "create", "api-key", value=FIRST)
        result = plain.deploy("keeper", APP, *MOUNT_FLAGS)
        assert result.returncode != 0
        said = " ".join(result.stderr.split())
        assert "needs the sandbox" in said and "sandbox: off" in said, describe(result)
        assert "`sandbox: on` in HOMERUN_HOME/config.yaml" in said
        assert FIRST not in result.stdout + result.stderr
        job = plain.run("jobs", "create", "signer", "--source", str(JOB_APP), *MOUNT_FLAGS)
        assert job.returncode != 0 and "needs the sandbox" in job.stderr, describe(job)
        pool = plain.run(
            "worker-pools", "deploy", "signers", "--source", str(JOB_APP), *MOUNT_FLAGS
        )
        assert pool.returncode != 0 and "needs the sandbox" in pool.stderr, describe(pool)


CONTAINER_DOCKERFILE = """\
# useradd: outside the engine-less subset, so podman builds it and instances are containers.
FROM localhost/homerun-test-debian:bookworm
RUN useradd --uid 4321 --create-home app
WORKDIR /app
COPY main.py .
USER app
CMD ["python3", "main.py"]
"""
CONTAINER_APP = '''\
"""The same key-and-cache API on the standard library, as a container's user 4321."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _send(self, answer):
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with open("/secrets/api-key") as opened:
            self._send({"api_key": opened.read(), "uid": os.getuid()})

    def do_POST(self):
        answer = {}
        try:
            with open("/secrets/api-key", "w") as opened:
                opened.write("replaced")
            answer["overwrite"] = "done"
        except OSError as error:
            answer["overwrite"] = error.strerror
        kib = int(self.path.rpartition("=")[2])
        try:
            with open("/cache/blob", "wb") as opened:
                opened.write(b"x" * 1024 * kib)
            answer["cache"] = "written"
        except OSError as error:
            answer["cache"] = error.strerror
        self._send(answer)


ThreadingHTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
'''


@pytest.mark.containers
@pytest.mark.slow
def test_a_container_instance_gets_the_same_mounts_without_a_sandbox(
    tmp_path: Path, venv_cache: Path
) -> None:
    from .containers import ensure_base_image, remove_containers

    ensure_base_image()
    source = tmp_path / "app"
    source.mkdir()
    (source / "Dockerfile").write_text(CONTAINER_DOCKERFILE)
    (source / "main.py").write_text(CONTAINER_APP)
    home = tmp_path / "home"
    try:
        with running_platform(home, venv_cache, {"sandbox": "off"}) as plain:
            _secret(plain, tmp_path, "create", "api-key", value=FIRST)
            deployed = plain.deploy("boxed", source, *MOUNT_FLAGS, timeout=600)
            assert deployed.returncode == 0, describe(deployed)
            seen = get(plain, "boxed")
            assert seen == {"api_key": FIRST, "uid": 4321}
            assert post(plain, "boxed", "/?kib=1024") == {
                "overwrite": "Read-only file system",
                "cache": "written",
            }
            assert post(plain, "boxed", "/?kib=3072")["cache"] == "No space left on device"
            start = plain.describe_service("boxed")["revisions"][0]["start_mode"]
            assert start["mode"] == "container", start
    finally:
        remove_containers(home)
