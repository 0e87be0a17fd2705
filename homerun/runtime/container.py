"""Instances as containers of an image, run by a container engine (podman), reachable on
loopback only; and the runtime that sends each instance to the container engine or to the
process runtime, by what its revision was built into.

An instance is `podman run --rm` in the foreground: its output is the container's, its exit is
the container's. PORT inside is the container port, 8080 by default, as on Cloud Run. As root
with network namespaces (runtime/netns.py), each container joins one that homerun made for it
(`--network ns:PATH`), as a pod has its own: the router and probes connect to the container
port on its loopback, the router's and metadata server's listeners are there too (unless the
container port is one of theirs), other machines are reached through slirp4netns; no other
container and no host process reaches it, and the engine writes no forwarding rule. Otherwise
the engine's network holds it and its port is published on 127.0.0.1 only (such a rule can
outlive its container: runtime/nat.py); a job's task (port 0) publishes none.
conmon, which podman leaves to watch the container, is the parent of the container's
processes: it is the instance's `pid`, so the metrics count the container's processes (and
on the engine's network the startup probe finds the listener in the instance's tree).
Stops go through the engine (`podman kill`, then `podman rm -f`); every container is labelled
with the daemon's home, so that a daemon killed before it could stop them removes them at its
next start (`remove_leftovers`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from homerun.model.engine import (
    PODMAN_GLOBAL_ARGS,
    PODMAN_RUN_ARGS,
    ContainerSpec,
    Engine,
)
from homerun.model.volumes import Mounts
from homerun.procfs import first_descendant, marked_processes
from homerun.runtime.base import InsideCommand, Instance, InstanceSpec, OutputSink, Runtime
from homerun.runtime.engine_call import engine_call
from homerun.runtime.image_root import ImageRoots, rooted_spec, why_not_rooted
from homerun.runtime.names import host_split
from homerun.runtime.netns import NetNamespace, Networks
from homerun.runtime.output import drain, pump
from homerun.runtime.sandbox import unsafe_mount_point, user_and_group

HOME_LABEL = "dev.homerun.home"
# The environment variable that marks the processes of a command run inside a container.
EXEC_MARK = "HOMERUN_EXEC"
REVISION_LABEL = "dev.homerun.revision"
# How long start() waits for podman to create the container (conmon's pid file appears).
CREATE_SECONDS = 120.0
_POLL_SECONDS = 0.005
_ENGINE_SECONDS = 30.0  # a `podman kill`, `rm`, `ps`
_LIST_ATTEMPTS = 5  # `podman images`, which may fail while another podman removes an image


def find_engine(setting: str = "auto") -> Engine | None:
    """The container engine config.yaml's `container-engine` names (auto: podman when it is
    installed); None for `none`, or when auto finds none. A named engine that is missing is
    an error at startup, not a surprise at the first deploy."""
    if setting == "none":
        return None
    if setting not in ("auto", "podman"):
        raise ValueError(
            f"container-engine: {setting!r} is not supported; write podman, auto or none"
        )
    program = shutil.which("podman")
    if program is None:
        if setting == "podman":
            raise ValueError(
                "container-engine: podman is not installed; install it "
                "(`./scripts/setup containers`, or apt-get install podman buildah runc) or "
                "write container-engine: auto"
            )
        return None
    try:
        version = subprocess.run(
            [program, *PODMAN_GLOBAL_ARGS, "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
            timeout=_ENGINE_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if version.returncode != 0:
        return None
    return Engine(
        name="podman",
        program=program,
        version=version.stdout.strip(),
        global_args=PODMAN_GLOBAL_ARGS,
        run_args=PODMAN_RUN_ARGS,
    )


class ContainerInstance:
    """A container of one instance: `podman run` in the foreground, watched by conmon."""

    def __init__(
        self,
        name: str,
        port: int,
        container: str,
        conmon: int,
        process: asyncio.subprocess.Process,
        readers: list[asyncio.Task[None]],
        engine: Engine,
        on_gone: Callable[[ContainerInstance], None] = lambda _: None,
    ) -> None:
        self.name = name
        self.port = port
        self.pid = conmon
        self.container = container
        self._process = process
        self._readers = readers
        self._engine = engine
        self._signals: list[asyncio.Future[str]] = []
        self._on_gone = on_gone
        self.pid_folder: Path | None = None  # conmon's pid file: removed once it has exited
        self.secrets_folder: Path | None = None  # its secret files: removed likewise
        # Its own network namespace (runtime/netns.py), dropped once it has exited; None: on
        # the engine's network, its port published on the host's loopback.
        self.network: NetNamespace | None = None
        self.on_exit: Callable[[], None] | None = None
        # podman enforces --memory inside the container (its OOM kill ends the container);
        # `podman run --rm` leaves no record saying so, so homerun does not claim it.
        self.memory_exceeded = False

    @property
    def returncode(self) -> int | None:
        return None if self._process.returncode is None else _status(self._process.returncode)

    async def exited(self) -> int:
        status = _status(await self._process.wait())
        self._on_gone(self)
        for folder in (self.pid_folder, self.secrets_folder):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if self.on_exit is not None:
            on_exit, self.on_exit = self.on_exit, None
            on_exit()
        await asyncio.gather(*self._signals, return_exceptions=True)
        for _ in range(20):  # conmon ends just after the container it watches
            if _reaped(self.pid):
                break
            await asyncio.sleep(0.05)
        return status

    async def wait(self) -> int:
        status = await self.exited()
        await drain(self._readers)
        return status

    def signal(self, signum: int) -> None:
        if signum == signal.SIGKILL:
            # rm -f kills what runs and removes the container, also when `podman run` is gone.
            command = self._engine.command("rm", "--force", "--time", "0", self.container)
        else:
            command = self._engine.command("kill", "--signal", str(signum), self.container)
        self._signals.append(asyncio.ensure_future(_engine_call(command)))

    async def signalled(self) -> None:
        """Once the engine has done what the signals sent so far asked."""
        await asyncio.gather(*self._signals, return_exceptions=True)

    def command_inside(self, argv: Sequence[str]) -> InsideCommand:
        # In the container, as its user, with its environment, working folder and limits. A
        # killed `podman exec` leaves its exec session running: a mark in the command's
        # environment tells its processes from the app's, to kill them (kill_exec).
        mark = f"{EXEC_MARK}={secrets.token_hex(8)}"
        command = self._engine.command("exec", "--env", mark, self.container, *argv)
        return InsideCommand(command, kill_inside=functools.partial(kill_exec, self.pid, mark))


class ContainerRuntime:
    """Instances of revisions built into container images; every other start goes to
    `processes` (the process or zygote runtime)."""

    def __init__(
        self,
        engine: Engine,
        processes: Runtime,
        *,
        home: Path,
        unrooted: str | None = "container-zygote: false in config.yaml",
        networks: Networks | None = None,
    ) -> None:
        """Without `unrooted` (why not), an image that runs gunicorn or uvicorn on $PORT is run
        by `processes` (the sandbox as root) in its own root folder, forked from a zygote
        (runtime/image_root.py). With `networks`, each container is in a network namespace of
        its own that homerun makes (runtime/netns.py), not on the engine's network."""
        self.engine = engine
        self._processes = processes
        self._networks = networks
        self._home = str(home)
        self._containers: set[str] = set()  # revisions whose instances are containers
        self._roots = ImageRoots(engine, {HOME_LABEL: self._home}) if unrooted is None else None
        self._unrooted = unrooted
        self._rooted: set[str] = set()  # revisions whose instances run in their image's root
        self._why_not_rooted: dict[str, str] = {}
        self._releasing: set[asyncio.Future[None]] = set()
        self._instances: set[ContainerInstance] = set()  # until `podman run` has exited
        # Instances' secret files, in memory where the machine has a tmpfs for it, in a folder
        # of this home's that only root enters (a daemon killed leaves it; the next removes it).
        home_key = hashlib.sha256(self._home.encode()).hexdigest()[:12]
        shared_memory = Path("/dev/shm")
        self._secrets_root = (
            shared_memory if shared_memory.is_dir() else Path(tempfile.gettempdir())
        ) / f"homerun-secrets-{home_key}"

    async def start(self, spec: InstanceSpec, output: OutputSink) -> Instance:
        if spec.container is None:
            return await self._processes.start(spec, output)
        if self._roots is not None and spec.revision and spec.port != 0:  # not a job's task
            rooted = await self._rooted_spec(spec, spec.container)
            if isinstance(rooted, InstanceSpec):
                self._rooted.add(spec.revision)
                return await self._processes.start(rooted, output)
            self._why_not_rooted[spec.revision] = rooted
        self._containers.add(spec.revision)
        return await self._start_container(spec, spec.container, output)

    async def _rooted_spec(
        self, spec: InstanceSpec, container: ContainerSpec
    ) -> InstanceSpec | str:
        """The instance in its image's root folder, or why it runs as a container."""
        assert self._roots is not None
        if spec.revision in self._why_not_rooted:
            return self._why_not_rooted[spec.revision]
        try:
            config = await asyncio.shield(self._roots.config(container.image))
            why_not = why_not_rooted(spec, container, config)
            if why_not is not None:
                return why_not  # said without making a container
            folder = await asyncio.shield(self._roots.folder(spec.revision, container.image))
        except (OSError, ValueError) as error:
            return f"its image's root folder could not be made ({error})"
        rooted = rooted_spec(spec, container, config, folder)
        if isinstance(rooted, InstanceSpec) and spec.revision not in self._rooted:
            # Decided once: the sandbox checks again at each start (and fails it, rather than
            # leave a revision's zygote in a root folder while its next instances are
            # containers).
            uid, _ = user_and_group(spec.revision, None)
            unsafe = unsafe_mount_point(folder, rooted.env, uid)
            if unsafe is not None:
                rooted = f"its image's root folder cannot hold the sandbox's mount points: {unsafe}"
        if isinstance(rooted, str):
            # Its command is one the zygote cannot run: the container that held the root
            # goes (it would keep the image from being removed), while this one starts.
            self._release(spec.revision)
        return rooted

    def mode(self, revision: str) -> tuple[str, str]:
        if revision in self._rooted:
            how, why = self._processes.mode(revision)
            return (
                how,
                f"its image's root folder ({self.engine.name} made and mounted a container of "
                f"it, never started) is its sandbox's /; {why}",
            )
        if revision in self._containers:
            why_not = self._why_not_rooted.get(revision, self._unrooted)
            return (
                "container",
                f"its image was built by {self.engine.name} {self.engine.version}: each "
                "instance is a container of it, "
                + (
                    "in a network namespace of its own (reachable only through the router; "
                    "other machines through slirp4netns where it is installed)"
                    if self._networks is not None
                    else "its port published on 127.0.0.1 only"
                )
                + (f" (not forked from a zygote: {why_not})" if why_not else ""),
            )
        return self._processes.mode(revision)

    def describe(self) -> str:
        """How images' instances run here, for status."""
        network = (
            "each container in a network namespace of its own"
            if self._networks is not None
            else "each container on the engine's network, its port published on 127.0.0.1"
        )
        forking = (
            "an image that runs gunicorn or uvicorn on $PORT forks its instances from a zygote "
            "in its own root folder"
            if self._unrooted is None
            else f"no image forks its instances from a zygote ({self._unrooted})"
        )
        return f"{network}; {forking}"

    def forget(self, revision: str) -> None:
        self._containers.discard(revision)
        self._why_not_rooted.pop(revision, None)
        self._processes.forget(revision)
        self._rooted.discard(revision)
        self._release(revision)

    def _release(self, revision: str) -> None:
        if self._roots is not None and self._roots.holds(revision):
            releasing = asyncio.ensure_future(self._roots.release(revision))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)

    async def close(self) -> None:
        """Remove every container instance still there (one whose stop the daemon's own stop
        cut short, as the process runtime kills what is left), then the revisions' image root
        containers (the zygotes are stopped first)."""
        left = list(self._instances)
        for instance in left:
            instance.signal(signal.SIGKILL)
        await asyncio.gather(*(instance.signalled() for instance in left))
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)
        if self._roots is not None:
            await self._roots.close()

    async def _start_container(
        self, spec: InstanceSpec, container: ContainerSpec, output: OutputSink
    ) -> ContainerInstance:
        name = f"homerun-{spec.name}"
        # Port 0: a job's task, which does not listen: no PORT, nothing published.
        listens = spec.port != 0
        env = dict(spec.env, PORT=str(container.port)) if listens else dict(spec.env)
        kept, acted_on = host_split(env)
        network: NetNamespace | None = None
        if self._networks is not None:
            # Its own namespace: reached on its loopback at the container port, as a pod is.
            keep_free = frozenset({container.port}) if listens else frozenset()
            network = self._networks.of(spec.name, keep_free)
            connect = ["--network", f"ns:/proc/{os.getpid()}/fd/{network.fd}"]
            port = container.port if listens else 0
        else:
            connect = ["--publish", f"127.0.0.1:{spec.port}:{container.port}"] if listens else []
            port = spec.port
        # podman reads conmon's pid file after conmon wrote it, and warns in the instance's
        # output if it is gone: the folder goes once the container has exited.
        folder = tempfile.mkdtemp(prefix="homerun-conmon-")
        secrets: Path | None = None
        try:
            if spec.mounts.secret_files:
                secrets = self._write_secrets(spec.mounts)
            pidfile = Path(folder) / "conmon.pid"
            command = self.engine.command(
                "run",
                "--rm",
                "--name",
                name,
                "--conmon-pidfile",
                str(pidfile),
                "--label",
                f"{HOME_LABEL}={self._home}",
                "--label",
                f"{REVISION_LABEL}={spec.revision}",
                *self.engine.run_args,
                *connect,
                "--pull",
                "never",
                *_limits(container),
                *_mounts(spec.mounts, secrets),
                *(["--user", container.user] if container.user is not None else []),
                *_privileges(container),
                *(["--workdir", container.workdir] if container.workdir is not None else []),
                # The values come from podman's own environment: not on its command line,
                # where any user's `ps` would read the secrets among them; but for names
                # podman (as root), Go or the loader act on in their own environment
                # (names.host_split: LD_PRELOAD, CONTAINERS_CONF, PATH...), given there.
                *[part for variable in kept for part in ("--env", variable)],
                *[part for item in acted_on.items() for part in ("--env", "=".join(item))],
                *(
                    ["--entrypoint", json.dumps(list(container.command))]
                    if container.command is not None
                    else []
                ),
                container.image,
                *(container.args or ()),
            )
            out_read, out_write = os.pipe()
            err_read, err_write = os.pipe()
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    env={**kept, "PATH": os.environ.get("PATH", os.defpath)},
                    stdin=subprocess.DEVNULL,
                    stdout=out_write,
                    stderr=err_write,
                    start_new_session=True,
                )
            except BaseException:
                os.close(out_read)
                os.close(err_read)
                raise
            finally:
                os.close(out_write)
                os.close(err_write)
            readers = [
                asyncio.create_task(pump(out_read, "stdout", output)),
                asyncio.create_task(pump(err_read, "stderr", output)),
            ]
            conmon = await _conmon_pid(pidfile, process)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            if secrets is not None:
                shutil.rmtree(secrets, ignore_errors=True)
            if network is not None:
                self._forget_network(spec.name)
            raise
        instance = ContainerInstance(
            spec.name,
            port,
            name,
            conmon or process.pid,
            process,
            readers,
            self.engine,
            on_gone=self._instances.discard,
        )
        self._instances.add(instance)
        instance.pid_folder = Path(folder)
        instance.secrets_folder = secrets
        if network is not None:
            instance.network = network
            instance.on_exit = functools.partial(self._forget_network, spec.name)
        if conmon is None and process.returncode is None:
            instance.signal(signal.SIGKILL)  # created too slowly: not worth waiting for
        return instance

    def _forget_network(self, owner: str) -> None:
        if self._networks is not None:
            self._networks.forget(owner)

    def _write_secrets(self, mounts: Mounts) -> Path:
        """The instance's secret files in a folder of its own (under one only root enters),
        one subfolder per mount: podman binds each read-only over the mount's folder."""
        self._secrets_root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self._secrets_root, 0o700)
        folder = Path(tempfile.mkdtemp(prefix="instance-", dir=self._secrets_root))
        try:
            for index, files in enumerate(mounts.secret_folders().values()):
                volume = folder / str(index)
                volume.mkdir()
                for file in files:
                    target = volume / Path(file.path).name
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as opened:
                        opened.write(file.data)
                    # Readable by the container's user, whoever the image makes it.
                    os.chmod(target, 0o444)
                os.chmod(volume, 0o555)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    async def remove_leftovers(self, log: Callable[[str], None]) -> None:
        """Containers of this home that a daemon killed before it could stop them left, and
        their secret files."""
        shutil.rmtree(self._secrets_root, ignore_errors=True)
        listed = await _engine_call(
            self.engine.command(
                "ps", "--all", "--filter", f"label={HOME_LABEL}={self._home}", "--format", "{{.ID}}"
            )
        )
        for container in listed.split():
            await _engine_call(self.engine.command("rm", "--force", "--time", "0", container))
            log(f"Removed container {container}: left running by a daemon that was killed")


async def _conmon_pid(pidfile: Path, process: asyncio.subprocess.Process) -> int | None:
    """conmon's pid once podman has created the container; None if podman exits first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CREATE_SECONDS
    while loop.time() < deadline:
        pid = _read_pid(pidfile)
        if pid is not None:
            return pid
        if process.returncode is not None:
            return None
        await asyncio.sleep(_POLL_SECONDS)
    return None


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):  # not there yet, or written halfway
        return None


async def _engine_call(command: list[str]) -> str:
    """engine_call for a stop or a listing: a failure is no error here, it shows as ""."""
    try:
        return await engine_call(command, check=False)
    except OSError:
        return ""


def remove_unused_images(
    engine: Engine,
    used: set[str],
    *,
    retry_seconds: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    stopped: Callable[[], bool] = lambda: False,
) -> list[str]:
    """Blocking: untag the images this home built (the engine's build repository: another
    home's are not seen) whose ID is not in `used` (sha256:… IDs of revisions and stored
    images); podman deletes an image with its last tag.
    One a container still runs (an instance of a deleted revision stopping, up to its stop
    grace) is refused by podman: it is tried again every second for `retry_seconds`, or until
    `stopped()` (the daemon stops: its exit must not wait on this). The tags removed.
    `podman images` fails now and then while another podman removes an image (podman issue
    24800): the listing is tried again too, a few times."""
    for _ in range(_LIST_ATTEMPTS):
        listed = subprocess.run(
            engine.command(
                "images",
                "--no-trunc",
                "--filter",
                f"reference={engine.build_repository}",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ),
            capture_output=True,
            text=True,
            timeout=_ENGINE_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        if listed.returncode == 0 or stopped():
            break
        sleep(1.0)
    unused = []
    for line in listed.stdout.splitlines():
        image, _, tag = line.partition(" ")
        image = image if image.startswith("sha256:") else f"sha256:{image}"
        if image not in used and tag.startswith(f"{engine.build_repository}:"):
            unused.append(tag)
    removed: list[str] = []
    waited = 0.0
    while unused:
        for tag in list(unused):
            untagged = subprocess.run(
                engine.command("rmi", tag),
                capture_output=True,
                timeout=_ENGINE_SECONDS,
                stdin=subprocess.DEVNULL,
            )
            if untagged.returncode == 0:
                removed.append(tag)
                unused.remove(tag)
        if not unused or waited >= retry_seconds or stopped():
            break
        sleep(1.0)
        waited += 1.0
    return removed


def _mounts(mounts: Mounts, secrets: Path | None) -> list[str]:
    """podman's --mount options: each secret folder bound read-only from the instance's own
    folder of secret files (`secrets`), each in-memory volume a tmpfs of its size limit that
    any user of the image may write (its pages count against the container's memory)."""
    options: list[str] = []
    folders = mounts.secret_folders() if secrets is not None else {}
    for index, folder in enumerate(folders):
        options += [
            "--mount",
            f"type=bind,source={secrets}/{index},destination={folder},ro=true",
        ]
    for volume in mounts.memory:
        size = f",tmpfs-size={volume.size_bytes}" if volume.size_bytes is not None else ""
        options += [
            "--mount",
            f"type=tmpfs,destination={volume.path},tmpfs-mode=0777{size}",
        ]
    return options


def _limits(container: ContainerSpec) -> list[str]:
    """--memory and --cpu as the container's cgroup limits."""
    limits = []
    if container.memory:
        limits += ["--memory", str(memory_bytes(container.memory))]
    if container.cpu:
        limits += ["--cpus", f"{cpu_count(container.cpu):g}"]
    return limits


def _privileges(container: ContainerSpec) -> list[str]:
    """securityContext's privileges and read-only root; capabilities dropped before added, as
    podman applies them (ALL: all)."""
    no_new_privileges = container.allow_privilege_escalation is False
    words = ["--security-opt", "no-new-privileges"] if no_new_privileges else []
    # A read-only root keeps tmpfs on /tmp, /var/tmp, /run, /dev/shm (podman's --read-only-tmpfs
    # default): the runtime contract's writable /tmp.
    words += ["--read-only"] if container.read_only else []
    words += [f"--cap-drop={name.lower()}" for name in container.cap_drop]
    return words + [f"--cap-add={name.lower()}" for name in container.cap_add]


_MEMORY_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
}


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (512Mi, 1Gi, 100M) in bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kMG]i?|)", quantity)
    if match is None:
        raise ValueError(f"{quantity!r} is not a memory quantity (write 512Mi or 1Gi)")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


def cpu_count(quantity: str) -> float:
    """A Kubernetes CPU quantity (1, 2, 0.5, 500m) in CPUs."""
    if quantity.endswith("m"):
        return int(quantity[:-1]) / 1000
    return float(quantity)


def _status(code: int) -> int:
    """podman's exit code as the process runtime reports one: 128+N (the container's PID 1
    killed by signal N, as shells say it) becomes -N."""
    if 128 < code < 128 + 65:
        return -(code - 128)
    return code


def kill_exec(conmon: int, mark: str) -> None:
    """Kill what a command run in the container with `mark` in its environment left running
    there (its exec session, which outlives a killed `podman exec`). As Kubernetes kills an
    exec probe's command past its timeout; the container's own processes stay."""
    first = first_descendant(conmon)
    if first is None:
        return  # the container is gone, and its exec sessions with it
    for process in marked_processes(first, mark.encode()):
        try:
            process.kill()
        except psutil.Error:
            pass  # gone already


def _reaped(pid: int) -> bool:
    """conmon, orphaned by podman, comes to the daemon (a subreaper): reap it once gone.
    True once it is (or it is not the daemon's to reap)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        return True
    return reaped != 0
