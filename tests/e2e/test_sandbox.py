"""Each revision sees only itself (runtime/sandbox.py), tried from inside an instance as a
hostile app would: HOMERUN_HOME's signing key, store, secrets and admin socket, another
service's secret and revision folder, the daemon's /proc, its own revision's files; all
refused, through a forked (zygote) instance and a spawned one alike.

These need root and bubblewrap; elsewhere the daemon says what it lacks (checked in
tests/runtime/test_sandbox.py) and they are skipped."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from homerun.config import Settings
from homerun.runtime.sandbox import FIRST_UID, mount_points_under, probe

from .harness import APPS, Platform, namespace_pid, process_environ, running_platform

pytestmark = pytest.mark.e2e

SNOOP = APPS / "snoop"
SECRET_VALUE = "s3cr3t-of-the-vault-" + os.urandom(4).hex()


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """A daemon with `sandbox: on`, serving `vault` (a secret in its environment), `snoop`
    (forked from its revision's zygote) and `snoop-spawned` (`--command`: spawned)."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox's own user per revision needs homerun to run as root")
    sandbox, said = probe("auto", Path("/nonexistent"))
    if sandbox is None:
        pytest.skip(said)
    home = tmp_path_factory.mktemp("sandboxed") / "home"
    with running_platform(home, venv_cache, {"sandbox": "on", "stop-grace-seconds": 3}) as own:
        secret_file = home.parent / "vault-secret"
        secret_file.write_text(SECRET_VALUE)
        own.run("secrets", "create", "vault-key", "--data-file", str(secret_file), check=True)
        secret_file.unlink()
        own.deploy_ok("vault", SNOOP, "--set-secrets", "VAULT_KEY=vault-key:latest")
        own.deploy_ok("snoop", SNOOP)
        own.deploy_ok(
            "snoop-spawned",
            SNOOP,
            "--command",
            "sh,-c,exec python -m flask --app main run --port $PORT",
        )
        yield own


def attempt(platform: Platform, service: str, op: str, **fields: Any) -> dict[str, Any]:
    response = platform.request(service, "POST", "/try", json={"op": op, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def me(platform: Platform, service: str) -> dict[str, Any]:
    response = platform.request(service, "GET", "/me")
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def revision_folder(platform: Platform, service: str) -> Path:
    described = platform.describe_service(service)
    name = described["revisions"][0]["name"]
    folder = platform.home / "revisions" / name
    assert folder.is_dir(), f"expected the revision's folder at {folder}"
    return folder


SERVICES = ["snoop", "snoop-spawned"]


def test_each_instance_starts_as_asked_and_says_it_is_sandboxed(sandboxed: Platform) -> None:
    modes = {}
    for service in SERVICES:
        revision = sandboxed.describe_service(service)["revisions"][0]
        modes[service] = revision["start_mode"]["mode"]
        assert "sandboxed (bubblewrap)" in revision["start_mode"]["reason"], revision
    assert modes == {"snoop": "zygote", "snoop-spawned": "spawn"}, modes
    status = sandboxed.run("status", check=True)
    assert "sandbox: sandboxed (bubblewrap)" in status.stdout, status.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_the_app_runs_unprivileged_in_its_own_pid_namespace(
    sandboxed: Platform, service: str
) -> None:
    report = me(sandboxed, service)
    assert report["uid"] >= FIRST_UID and report["gid"] >= FIRST_UID, report
    assert report["no_new_privs"], report
    # Its own PID namespace: a handful of its own processes, none of the host's.
    assert sandboxed.pid not in report["pids"] or report["pid"] < 100, report
    assert len(report["pids"]) < 20, report


@pytest.mark.parametrize("service", SERVICES)
def test_homerun_home_is_out_of_reach(sandboxed: Platform, service: str) -> None:
    home = sandboxed.home
    paths = Settings().paths(home)
    for secret in [paths.signing_key, paths.database, paths.admin_token]:
        assert secret.exists(), f"the test expects {secret} to exist on the host"
        answer = attempt(sandboxed, service, "read", path=str(secret))
        assert not answer["ok"], f"{service} read {secret}: {answer}"
    listed = attempt(sandboxed, service, "list", path=str(home))
    assert not listed["ok"] or set(listed["result"]) <= {"revisions", "venvs", "network", "inspect"}
    secrets = attempt(sandboxed, service, "list", path=str(home / "secrets"))
    assert not secrets["ok"], secrets
    admin = attempt(sandboxed, service, "connect", path=str(home / "admin.sock"))
    assert not admin["ok"], f"{service} connected to the admin socket: {admin}"


@pytest.mark.parametrize("service", SERVICES)
def test_another_services_secret_and_folder_are_out_of_reach(
    sandboxed: Platform, service: str
) -> None:
    vault = revision_folder(sandboxed, "vault")
    answer = attempt(sandboxed, service, "list", path=str(vault))
    assert not answer["ok"], f"{service} listed vault's folder: {answer}"
    main = attempt(sandboxed, service, "read", path=str(vault / "main.py"))
    assert not main["ok"], main
    # Every process this instance can see, and the daemon's pid: no environment holds the
    # secret (vault's own instance does, and has it: the secret was given).
    own = me(sandboxed, "vault")
    assert own["uid"] != me(sandboxed, service)["uid"], "two revisions, one user"
    for pid in {*me(sandboxed, service)["pids"], sandboxed.pid}:
        environ = attempt(sandboxed, service, "read", path=f"/proc/{pid}/environ")
        assert SECRET_VALUE not in str(environ), f"{service} read the secret in pid {pid}"
        assert str(sandboxed.home) not in str(environ.get("result", "")) or pid != sandboxed.pid


@pytest.mark.parametrize("service", SERVICES)
def test_the_daemons_proc_is_out_of_reach(sandboxed: Platform, service: str) -> None:
    answer = attempt(sandboxed, service, "read", path=f"/proc/{sandboxed.pid}/environ")
    assert not answer["ok"] or "HOMERUN_E2E_MARKER" not in answer["result"], answer
    signalled = attempt(sandboxed, service, "kill", pid=sandboxed.pid)
    assert not signalled["ok"] or me(sandboxed, service)["pid"] == sandboxed.pid, signalled


@pytest.mark.parametrize("service", SERVICES)
def test_the_revisions_files_are_read_only_and_tmp_is_private(
    sandboxed: Platform, service: str
) -> None:
    folder = Path(me(sandboxed, service)["cwd"])  # the revision's WORKDIR, on the host too
    assert folder.is_relative_to(revision_folder(sandboxed, service)), folder
    before = (folder / "main.py").read_bytes()
    own = attempt(sandboxed, service, "read", path=str(folder / "main.py"))
    assert own["ok"], f"{service} cannot read its own code: {own}"
    written = attempt(sandboxed, service, "write", path=str(folder / "main.py"))
    assert not written["ok"], f"{service} wrote its own revision's code: {written}"
    assert (folder / "main.py").read_bytes() == before
    created = attempt(sandboxed, service, "write", path=str(folder / "new.py"))
    assert not created["ok"], created
    tmp = attempt(sandboxed, service, "write", path=f"/tmp/{service}-scratch")
    assert tmp["ok"], f"{service} cannot write its own /tmp: {tmp}"
    assert not Path(f"/tmp/{service}-scratch").exists(), "the instance's /tmp is the host's"
    system = attempt(sandboxed, service, "write", path="/etc/homerun-sandbox-test")
    assert not system["ok"], system
    # Its home is one it may write (the daemon user's is hidden: /tmp stands for it).
    home = me(sandboxed, service)["home"]
    written = attempt(sandboxed, service, "write", path=f"{home}/.{service}-settings")
    assert written["ok"], f"{service} cannot write its home {home}: {written}"


@pytest.mark.parametrize("spawned", [False, True])
def test_the_loaders_variables_never_reach_the_hosts_programs_run_as_root(
    sandboxed: Platform, spawned: bool
) -> None:
    # A Dockerfile's ENV or a deploy's --set-env-vars may name what the dynamic loader acts on:
    # the host's env and bwrap, which start the sandbox as root, must not see it (LD_PRELOAD
    # would run a library of the deploy's as root on the host). LD_DEBUG_OUTPUT shows who did:
    # each process that reads it writes PATH.PID, on the host's /tmp if outside the sandbox.
    trace = Path(f"/tmp/homerun-ld-trace-{uuid.uuid4().hex}")
    service = "snoop-ld-spawned" if spawned else "snoop-ld"
    command = ["--command", "sh,-c,exec python -m flask --app main run --port $PORT"]
    sandboxed.deploy_ok(
        service,
        SNOOP,
        "--set-env-vars",
        f"LD_DEBUG=files,LD_DEBUG_OUTPUT={trace}",
        *(command if spawned else []),
    )
    try:
        assert me(sandboxed, service)["ld_debug"] == "files"  # the app still gets them
        written = sorted(trace.parent.glob(f"{trace.name}.*"))
        assert written == [], f"host programs read the deploy's LD_DEBUG_OUTPUT: {written}"
    finally:
        (revision,) = sandboxed.describe_service(service)["revisions"]
        sandboxed.run("services", "delete", service, "-q", timeout=60)
        for path in trace.parent.glob(f"{trace.name}.*"):
            path.unlink()
    # Its inspector folder was a tmpfs of its own: gone with the revision, not left mounted.
    mounted = mount_points_under(sandboxed.home)
    assert not [point for point in mounted if revision["name"] in point], mounted


PROWLER = """\
import json, os
home = os.environ["HOME_TO_TRY"]
tried = {}
for name in ("signing-key", "homerun.db", "admin-token"):
    try:
        with open(os.path.join(home, name), "rb") as opened:
            tried[name] = "read %d bytes" % len(opened.read())
    except OSError as error:
        tried[name] = "refused: " + type(error).__name__
print("PROWLER " + json.dumps({"uid": os.getuid(), "pid": os.getpid(), "tried": tried}))
"""


def test_a_jobs_task_is_sandboxed_like_an_instance(sandboxed: Platform, tmp_path: Path) -> None:
    """Issue 16's "each task is a process, sandboxed and limited like an instance": a task that
    goes for HOMERUN_HOME's keys and store finds nothing, and runs as an unprivileged user in
    a PID namespace of its own."""
    source = tmp_path / "prowler"
    source.mkdir()
    (source / "main.py").write_text(PROWLER)
    (source / "Procfile").write_text("web: python main.py\n")
    sandboxed.run(
        "jobs", "create", "prowler", "--source", str(source),
        "--set-env-vars", f"HOME_TO_TRY={sandboxed.home}", "--max-retries", "0",
        check=True, timeout=270,
    )  # fmt: skip
    executed = sandboxed.run("jobs", "execute", "prowler", "--wait", timeout=180)
    assert executed.returncode == 0, executed.stdout + executed.stderr
    logs = sandboxed.run("jobs", "logs", "read", "prowler", "--limit", "50", check=True).stdout
    line = next(line for line in logs.splitlines() if "PROWLER " in line)
    report = json.loads(line.split("PROWLER ", 1)[1])
    assert report["uid"] >= FIRST_UID, report
    assert report["pid"] < 10, report  # its PID namespace's own numbers
    assert (sandboxed.home / "signing-key").exists()
    for name, outcome in report["tried"].items():
        assert outcome.startswith("refused"), (name, outcome)


def test_sandbox_off_still_runs_instances_as_homeruns_user_and_says_so(
    tmp_path: Path, venv_cache: Path
) -> None:
    """`sandbox: auto` is the default; `sandbox: off` turns it off: the app runs as homerun's
    user, in the host's PID namespace, and status says so."""
    config = {"sandbox": "off", "stop-grace-seconds": 3}
    with running_platform(tmp_path / "home", venv_cache, config) as own:
        own.deploy_ok("snoop-off", SNOOP)
        revision = own.describe_service("snoop-off")["revisions"][0]
        assert "sandboxed (bubblewrap)" not in revision["start_mode"]["reason"], revision
        status = own.run("status", check=True).stdout
        assert "instances are not sandboxed (sandbox: off" in status, status
        report = me(own, "snoop-off")
        assert report["uid"] == os.geteuid(), report
        assert namespace_pid(report["pid"]) == report["pid"]  # the host's own pid
        assert process_environ(report["pid"]).get("K_SERVICE") == "snoop-off"
        # Its own files are in reach, HOMERUN_HOME's signing key included: nothing hides them.
        assert attempt(own, "snoop-off", "read", path=str(own.home / "signing-key"))["ok"]


def test_an_app_and_its_virtualenv_written_under_umask_077_still_run(tmp_path: Path) -> None:
    """A source whose files only their owner may read (a checkout under umask 077), built and
    run by a daemon under umask 077 (its virtualenv, hosts file, programs): the revision's own
    user reads what it needs (homerun/readable.py), so the seed's app answers."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox's own user per revision needs homerun to run as root")
    sandbox, said = probe("auto", Path("/nonexistent"))
    if sandbox is None:
        pytest.skip(said)
    source = tmp_path / "checkout" / "flask_seed"
    shutil.copytree(APPS / "flask_seed", source)
    for path in [source.parent, source, *source.iterdir()]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    previous = os.umask(0o077)
    try:
        # Its own virtualenv cache: the shared one was written under the usual umask.
        with running_platform(tmp_path / "home", tmp_path / "venvs", {"sandbox": "on"}) as own:
            own.deploy_ok("private-files", source)
            response = own.request("private-files", "GET", "/")
            assert response.status_code == 200, response.text
            assert (tmp_path / "venvs").stat().st_mode & 0o077 == 0  # the umask was in force
    finally:
        os.umask(previous)
