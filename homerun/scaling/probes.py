"""Health probes run against one instance: a TCP connect, an HTTP GET, a gRPC health check or a
command, each answering pass or fail with the reason in words (model/probes.py counts the
answers)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from homerun.model.probes import Probe, ProbeAction
from homerun.runtime.base import InsideCommand, as_it_is, join_cgroups
from homerun.runtime.grpc_health import check_health
from homerun.runtime.names import host_split
from homerun.runtime.netns import NetNamespace, open_connection
from homerun.runtime.process import close_inherited_fds

# The kubelet's User-Agent is `kube-probe/VERSION`; apps that skip logging or auth for probes
# look for its prefix.
USER_AGENT = "kube-probe/homerun"
# What an exec probe's failure shows of its output.
_OUTPUT_SHOWN = 200


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probe goes: the instance's $PORT (in its revision's own network namespace when
    it has one), and for exec its environment, its folder, and how a command runs inside the
    instance (Instance.command_inside: in its container or sandbox, as its user)."""

    port: int
    env: Mapping[str, str]
    cwd: Path
    network: NetNamespace | None = None
    inside: Callable[[Sequence[str]], InsideCommand] = as_it_is


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str  # "answered 200", "connection refused", "exited with 1: not ready"


async def run_probe(probe: Probe, target: ProbeTarget) -> ProbeResult:
    """One try of the probe, bounded by its timeoutSeconds."""
    if probe.action is ProbeAction.EXEC:
        return await _exec(probe, target)
    if probe.action is ProbeAction.GRPC:
        answer = await check_health(
            "127.0.0.1",
            target.port,
            service=probe.service,
            within=probe.timeout_seconds,
            network=target.network,
        )
        return ProbeResult(answer.ready, "SERVING" if answer.ready else answer.reason)
    try:
        return await asyncio.wait_for(_connect(probe, target), probe.timeout_seconds)
    except TimeoutError:
        return ProbeResult(False, f"no answer within timeoutSeconds={probe.timeout_seconds}")


async def _connect(probe: Probe, target: ProbeTarget) -> ProbeResult:
    try:
        reader, writer = await open_connection("127.0.0.1", target.port, target.network)
    except OSError as error:
        # asyncio words it "Connect call failed (address)"; the errno says why.
        reason = os.strerror(error.errno) if error.errno else str(error)
        return ProbeResult(False, f"connect to $PORT={target.port}: {reason}")
    try:
        if probe.action is ProbeAction.TCP:
            return ProbeResult(True, "connected")
        return await _get(probe, target, reader, writer)
    finally:
        writer.close()


async def _get(
    probe: Probe, target: ProbeTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> ProbeResult:
    headers = {"Host": f"127.0.0.1:{target.port}", "User-Agent": USER_AGENT, "Accept": "*/*"}
    for name, value in probe.headers:  # the probe's own headers replace these, as kubelet's
        headers = {key: v for key, v in headers.items() if key.lower() != name.lower()}
        headers[name] = value
    head = f"GET {probe.path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    try:
        writer.write((head + "Connection: close\r\n\r\n").encode("latin-1"))
        # At most the reader's limit (64 KiB): an app that sends a longer line fails the probe.
        status_line = await reader.readline()
    except (OSError, UnicodeEncodeError, ValueError) as error:
        return ProbeResult(False, f"GET {probe.path}: {error}")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        shown = status_line[:80].decode("latin-1").strip() or "the connection closed"
        return ProbeResult(False, f"GET {probe.path}: not an HTTP answer ({shown})")
    status = int(parts[1])
    # Kubernetes: any status from 200 to 399 passes.
    return ProbeResult(200 <= status < 400, f"GET {probe.path} answered {status}")


def _environment(command: InsideCommand, env: dict[str, str]) -> dict[str, str]:
    """What the probe's process starts with: where it is a host program run as root (nsenter,
    podman), none of what such a program acts on (LD_PRELOAD...: runtime/names.py); the
    runtime gives the command those once it runs as the instance's user."""
    return host_split(env)[0] if command.hosted else env


async def _exec(probe: Probe, target: ProbeTarget) -> ProbeResult:
    try:
        command = target.inside(probe.command)
        process = await asyncio.create_subprocess_exec(
            *command.argv,
            env=_environment(command, dict(target.env, PORT=str(target.port))),
            cwd=target.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(_prepare_command, target.network, command.cgroup_procs),
        )
    except ProcessLookupError as error:
        return ProbeResult(False, str(error))
    except OSError as error:
        return ProbeResult(False, f"{probe.command[0]}: {error.strerror or error}")
    except subprocess.SubprocessError:  # the instance's control groups are gone: so is it
        return ProbeResult(False, f"{probe.command[0]}: the instance's control groups are gone")
    try:
        output = await asyncio.wait_for(_output(process), probe.timeout_seconds)
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        command.kill_inside()
        return ProbeResult(
            False, f"{probe.describe()} ran past timeoutSeconds={probe.timeout_seconds}"
        )
    finally:
        # Cancelled: the command goes with the probe. Only while its leader is not reaped, so
        # that the group id cannot name another process's group by then.
        if process.returncode is None:
            _kill_group(process.pid)
            command.kill_inside()
    if process.returncode == 0:
        return ProbeResult(True, "exited with 0")
    shown = output.decode(errors="replace").strip()[:_OUTPUT_SHOWN]
    detail = f"{probe.describe()} exited with {process.returncode}"
    return ProbeResult(False, detail + (f": {shown}" if shown else ""))


def _prepare_command(network: NetNamespace | None, cgroup_procs: tuple[str, ...]) -> None:
    """Between fork and exec of an exec probe's command: in the instance's control groups,
    and its network namespace, where its $PORT is."""
    join_cgroups(cgroup_procs)
    close_inherited_fds()
    if network is not None:
        network.enter()


async def _output(process: asyncio.subprocess.Process) -> bytes:
    """What the command printed, of which the first bytes are kept (a command that prints
    without end costs reading, not memory), once it exits."""
    kept = b""
    while process.stdout is not None and (chunk := await process.stdout.read(65536)):
        kept += chunk[: max(_OUTPUT_SHOWN - len(kept), 0)]
    await process.wait()
    return kept


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # gone already
        pass
