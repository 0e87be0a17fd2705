"""A real homerun daemon on loopback, driven the way a user drives it: the CLI and HTTP.

Every test here goes through the `homerun` command and real HTTP on 127.0.0.1; nothing imports
daemon internals. One daemon serves the whole session where tests don't interfere; tests that
stop or kill the daemon get their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fakes import free_port

from homerun.runtime.sandbox import mount_points_under, unmount_inspect_folders

REPO_ROOT = Path(__file__).resolve().parents[2]
APPS = REPO_ROOT / "tests" / "apps"
# shared/ sits beside the repository for developers and CI; the seeds are the acceptance texts.
SEEDS = REPO_ROOT.parent / "shared" / "seeds"

# The console script installed with the package; `python -m homerun` when run from a checkout
# whose scripts are not on disk.
_SCRIPT = Path(sys.executable).with_name("homerun")
HOMERUN = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "homerun"]

DAEMON_READY_SECONDS = 30.0
# A cold deploy builds a virtualenv from PyPI (Django, httpbin: tens of seconds on 2 cores);
# below pytest-timeout's 300 s so a stuck deploy fails with its output, not a stack dump.
DEPLOY_SECONDS = 270.0
# Settings of the shared daemon: a small body limit so the 413 test needs no huge upload, and a
# short stop grace so redeploys and deletes don't wait 10 s for apps that ignore SIGTERM.
SHARED_CONFIG = {"max-request-body-bytes": 1024 * 1024, "stop-grace-seconds": 3}
REVISION_NAME = re.compile(r"\b[a-z][-a-z0-9]*-\d{5}-[a-z0-9]+\b")


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped by its new parent) counts as dead."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    state = stat_line.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def process_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


def instance_processes(revisions: set[str] | None = None, service: str | None = None) -> list[int]:
    """PIDs of live processes started as instances (K_REVISION in their environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = process_environ(int(entry.name))
        revision = env.get("K_REVISION")
        if revision is None or not process_alive(int(entry.name)):
            continue
        if process_name(int(entry.name)) == "homerun-zygote":
            continue  # a revision's zygote: it stays, also at zero instances
        if revisions is not None and revision not in revisions:
            continue
        if service is not None and env.get("K_SERVICE") != service:
            continue
        found.append(int(entry.name))
    return found


def namespace_pid(pid: int) -> int | None:
    """The pid `pid` has in its own PID namespace (a sandbox's), which is what the process sees
    as its own; outside a sandbox, `pid` itself. None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return pid


def get_inside(pid: int, port: int, path: str) -> dict[str, Any]:
    """GET http://127.0.0.1:`port``path` from the network of process `pid` (an instance's
    port answers only inside its revision's network namespace, as root with the sandbox; in
    the host's network otherwise), as JSON."""
    done = subprocess.run(
        [
            "nsenter",
            f"--target={pid}",
            "--net",
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"GET {path} on port {port} of pid {pid}: {done.stderr}"
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def host_pid(app_pid: int, service: str, port: int | None = None) -> int:
    """The host's pid of the service's instance process that says its pid is `app_pid` (and
    that listens on `port`, to tell apart spawned instances, each pid 2 of its own sandbox): an
    app in a sandbox sees its own PID namespace, a test the host's."""
    found = [
        pid
        for pid in instance_processes(service=service)
        if namespace_pid(pid) == app_pid
        and (port is None or process_environ(pid).get("PORT") == str(port))
    ]
    assert len(found) == 1, f"{service}: {len(found)} processes say they are pid {app_pid}"
    return found[0]


class Platform:
    """One homerun daemon under its own HOMERUN_HOME, listening on its own port."""

    def __init__(self, home: Path, port: int, venv_cache: Path, config: dict[str, Any]) -> None:
        self.home = home
        self.port = port
        self.home.mkdir(parents=True, exist_ok=True)
        # HOMERUN_TEST_SANDBOX=on|off|auto runs every test daemon with that `sandbox:` (the
        # suites pass with the sandbox on as without); a test's own setting wins.
        sandbox = os.environ.get("HOMERUN_TEST_SANDBOX")
        if sandbox and "sandbox" not in config:
            config = {**config, "sandbox": sandbox}
        if config:
            (home / "config.yaml").write_text(yaml.safe_dump(config))
        # A marker inherited by the daemon (and by instances, if it passes its environment on),
        # so teardown can find anything this platform left running.
        self.marker = uuid.uuid4().hex
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HOMERUN_")}
        self.env.update(
            HOMERUN_HOME=str(home),
            HOMERUN_VENV_CACHE=str(venv_cache),
            HOMERUN_E2E_MARKER=self.marker,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home.parent / f"{home.name}-up.log"
        self._deployed: dict[str, tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = {}
        # Revision names this platform ran, for the leak check at teardown.
        self.revisions_seen: set[str] = set()

    # Lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "the daemon was not started"
        return self.process.pid

    def start(self) -> None:
        """`homerun up --port P` in the foreground of its own session; returns once it answers."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*HOMERUN, "up", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = DAEMON_READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(
                    f"`homerun up` exited with {self.process.returncode} before it answered:\n"
                    f"{self.log_tail()}"
                )
            if self.run("status", timeout=10, check=False).returncode == 0:
                return
            time.sleep(0.2)
        pytest.fail(f"`homerun status` did not succeed within {timeout}s:\n{self.log_tail()}")

    def down(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`homerun down`, then wait for the foreground daemon to exit."""
        result = self.run("down", timeout=timeout, check=False)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        return result

    def kill(self) -> None:
        """SIGKILL the daemon process alone (not its group), as an OOM killer would."""
        os.kill(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=10)

    def teardown(self) -> list[str]:
        """Stop the daemon whatever state it is in; return what had to be killed by hand."""
        leaks: list[str] = []
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.revisions_seen |= set(
                    REVISION_NAME.findall(self.run("revisions", "list", timeout=20).stdout)
                )
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.down(timeout=60)
        if self.process is not None and self.process.poll() is None:
            leaks.append(f"daemon pid {self.pid} survived `homerun down`")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        for pid in self.leftover_processes():
            leaks.append(f"pid {pid} ({process_environ(pid).get('K_REVISION', '?')}) survived")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # The revisions' inspector tmpfs (runtime/sandbox.py): the daemon's stop unmounts them
        # (a test's own mounts elsewhere in the home, such as a small disk for logs, stay).
        mounted = mount_points_under(self.home / "inspect")
        if mounted:
            leaks.append(f"mounts survived: {mounted}")
            unmount_inspect_folders(self.home / "inspect")
        return leaks

    def leftover_processes(self, grace: float = 15.0) -> list[int]:
        """Instances of this platform still alive `grace` seconds after the daemon stopped."""
        deadline = time.monotonic() + grace
        while True:
            alive = [
                pid
                for pid in instance_processes()
                if process_environ(pid).get("HOMERUN_E2E_MARKER") == self.marker
                or process_environ(pid).get("K_REVISION") in self.revisions_seen
            ]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        texts = []
        for path in (self.log_path, self.home / "daemon.log"):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                texts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(texts) or "(no daemon log)"

    # The CLI ----------------------------------------------------------------------------------

    def run(
        self, *args: str, timeout: float = 120.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*HOMERUN, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(describe(result))
        return result

    def deploy(
        self, service: str, source: Path | str, *flags: str, timeout: float = DEPLOY_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        """`homerun deploy`; public (`--allow-unauthenticated`) unless the flags say otherwise,
        since the tests call services without tokens. Access control has its own tests."""
        access = {"--allow-unauthenticated", "--no-allow-unauthenticated"}
        if not access & set(flags):
            flags = (*flags, "--allow-unauthenticated")
        return self.run("deploy", service, "--source", str(source), *flags, timeout=timeout)

    def deploy_ok(
        self, service: str, source: Path | str, *flags: str
    ) -> subprocess.CompletedProcess[str]:
        """Deploy and check the contract: exit 0 and the URL as the last line of stdout."""
        result = self.deploy(service, source, *flags)
        assert result.returncode == 0, describe(result)
        lines = result.stdout.strip().splitlines()
        assert lines, describe(result)
        assert lines[-1] == f"Service URL: {self.url(service)}", describe(result)
        return result

    def ensure_deployed(
        self, service: str, source: Path | str, *flags: str
    ) -> subprocess.CompletedProcess[str]:
        """Deploy once per session; later callers reuse the result (or its failure)."""
        key = (str(source), *flags)
        if service in self._deployed:
            previous_key, result = self._deployed[service]
            assert previous_key == key, f"{service} already deployed with other settings"
        else:
            result = self.deploy(service, source, *flags)
            self._deployed[service] = (key, result)
        if result.returncode != 0:
            pytest.fail(f"deploying {service} failed:\n{describe(result)}")
        return result

    def describe_service(self, service: str) -> dict[str, Any]:
        """homerun's own summary of a service (revisions, instances, scaling), parsed; fails
        the test on error. `--format summary-json` since `--format json` became the Knative
        Service document; `json` for a CLI that predates that."""
        result = self.run("services", "describe", service, "--format", "summary-json", timeout=30)
        if result.returncode == 2 and "invalid choice" in result.stderr:
            result = self.run("services", "describe", service, "--format", "json", timeout=30)
        if result.returncode != 0:
            pytest.fail(describe(result))
        described: dict[str, Any] = json.loads(result.stdout)
        self.revisions_seen |= {revision["name"] for revision in described["revisions"]}
        return described

    # HTTP through the router ------------------------------------------------------------------

    def host(self, service: str) -> str:
        return f"{service}.localhost:{self.port}"

    def url(self, service: str) -> str:
        return f"http://{self.host(service)}"

    def client(self, service: str, timeout: float = 60.0) -> httpx.Client:
        # Python's resolver does not map *.localhost to loopback: connect to 127.0.0.1 and name
        # the service in the Host header, which is all the router looks at.
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Host": self.host(service)},
            timeout=timeout,
            trust_env=False,
        )

    def request(self, service: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client(service, timeout=kwargs.pop("timeout", 60.0)) as client:
            return client.request(method, path, **kwargs)

    def env_of(self, service: str) -> dict[str, Any]:
        """The /env report of a service deployed from tests/apps/streaming."""
        response = self.request(service, "GET", "/env")
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        self.revisions_seen.add(report["K_REVISION"])
        return report


def describe(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(str(arg) for arg in result.args)
    return (
        f"$ {command}\nexit {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )


@contextlib.contextmanager
def running_platform(
    home: Path, venv_cache: Path, config: dict[str, Any] | None = None
) -> Iterator[Platform]:
    platform = Platform(home, free_port(), venv_cache, config or {})
    try:
        platform.start()
        yield platform
    finally:
        leaks = platform.teardown()
        if leaks:
            warnings.warn(f"homerun e2e teardown had to clean up: {leaks}", stacklevel=1)


def json_lines_whole(folder: Path) -> list[str]:
    """Lines of the folder's *.jsonl* files that are not one JSON object each."""
    broken = []
    for path in folder.glob("*.jsonl*"):
        data = path.read_bytes()
        assert data == b"" or data.endswith(b"\n"), f"{path} ends in the middle of a line"
        for line in data.splitlines():
            try:
                assert isinstance(json.loads(line), dict)
            except (ValueError, AssertionError):
                broken.append(f"{path.name}: {line[:200]!r}")
    return broken


def copy_app(name: str, destination: Path) -> Path:
    """A private copy of an app folder, for tests that must not touch tests/apps."""
    target = destination / name
    shutil.copytree(APPS / name, target)
    return target
