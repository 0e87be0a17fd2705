"""Probe actions against real sockets and processes: what passes, what fails, and the reason."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

from fakes import free_port, loopback_listener

from homerun.model.probes import Probe, ProbeAction
from homerun.runtime.base import InsideCommand
from homerun.scaling.probes import ProbeResult, ProbeTarget, run_probe


def probe_once(probe: Probe, target: ProbeTarget) -> ProbeResult:
    return asyncio.run(run_probe(probe, target))


def test_tcp_and_http_probes_on_a_closed_port_fail_with_the_reason(tmp_path: Path) -> None:
    target = ProbeTarget(free_port(), {}, tmp_path)
    tcp = probe_once(Probe(), target)
    assert not tcp.ok and "Connection refused" in tcp.detail
    http = probe_once(Probe(action=ProbeAction.HTTP, path="/ready"), target)
    assert not http.ok and http.detail.startswith(f"connect to $PORT={target.port}")


def test_an_http_probe_reads_the_status_and_sends_its_headers(tmp_path: Path) -> None:
    async def scenario() -> tuple[ProbeResult, bytes]:
        received: list[bytes] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, sock=loopback_listener())
        port = server.sockets[0].getsockname()[1]
        probe = Probe(action=ProbeAction.HTTP, path="/ready?x=1", headers=(("X-Probe", "1"),))
        result = await run_probe(probe, ProbeTarget(port, {}, tmp_path))
        server.close()
        return result, received[0]

    result, head = asyncio.run(scenario())
    assert result == ProbeResult(True, "GET /ready?x=1 answered 302")
    assert head.startswith(b"GET /ready?x=1 HTTP/1.1\r\n")
    assert b"User-Agent: kube-probe/homerun\r\n" in head and b"X-Probe: 1\r\n" in head


def test_a_server_that_accepts_but_never_answers_fails_at_the_timeout(tmp_path: Path) -> None:
    with loopback_listener() as listener:
        target = ProbeTarget(listener.getsockname()[1], {}, tmp_path)
        started = time.monotonic()
        result = probe_once(Probe(action=ProbeAction.HTTP, timeout_seconds=1), target)
    assert result == ProbeResult(False, "no answer within timeoutSeconds=1")
    assert time.monotonic() - started < 3


def test_an_exec_probe_runs_with_the_instance_env_and_folder(tmp_path: Path) -> None:
    target = ProbeTarget(1234, {"PATH": os.environ["PATH"], "NAME": "x"}, tmp_path)
    script = 'test "$PORT" = 1234 && test "$NAME" = x && test -f ready || { echo not yet; exit 3; }'
    probe = Probe(action=ProbeAction.EXEC, command=("/bin/sh", "-c", script))
    assert probe_once(probe, target) == ProbeResult(
        False, f"exec /bin/sh -c {script} exited with 3: not yet"
    )
    (tmp_path / "ready").touch()
    assert probe_once(probe, target).ok


def test_an_exec_probe_runs_as_the_instance_says_and_fails_plainly_once_it_is_gone(
    tmp_path: Path,
) -> None:
    """The instance makes the command (Instance.command_inside: nsenter, podman exec); an
    instance gone (its sandbox, its control groups) fails the probe with the reason."""
    env = {"PATH": os.environ["PATH"]}

    def through_env(argv: Sequence[str]) -> InsideCommand:
        return InsideCommand(["env", "ENTERED=yes", *argv])

    probe = Probe(action=ProbeAction.EXEC, command=("/bin/sh", "-c", 'test "$ENTERED" = yes'))
    assert probe_once(probe, ProbeTarget(1, env, tmp_path, inside=through_env)).ok

    def gone(argv: Sequence[str]) -> InsideCommand:
        raise ProcessLookupError("svc-00001-abc-x has no sandbox to run a command in")

    assert probe_once(probe, ProbeTarget(1, env, tmp_path, inside=gone)) == ProbeResult(
        False, "svc-00001-abc-x has no sandbox to run a command in"
    )

    def groups_removed(argv: Sequence[str]) -> InsideCommand:
        return InsideCommand(list(argv), cgroup_procs=(str(tmp_path / "gone" / "cgroup.procs"),))

    assert probe_once(probe, ProbeTarget(1, env, tmp_path, inside=groups_removed)) == ProbeResult(
        False, "/bin/sh: the instance's control groups are gone"
    )


def test_an_exec_probe_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    probe = Probe(action=ProbeAction.EXEC, command=("/bin/sh", "-c", script), timeout_seconds=1)
    result = probe_once(probe, ProbeTarget(1, {"PATH": os.environ["PATH"]}, tmp_path))
    assert not result.ok and "ran past timeoutSeconds=1" in result.detail
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and b"Z" not in _state(child):
        assert time.monotonic() < deadline, "the probe's child outlived it"
        time.sleep(0.05)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


def test_a_missing_exec_program_fails_with_the_reason(tmp_path: Path) -> None:
    probe = Probe(action=ProbeAction.EXEC, command=("homerun-no-such-probe",))
    result = probe_once(probe, ProbeTarget(1, {"PATH": "/usr/bin"}, tmp_path))
    assert result == ProbeResult(False, "homerun-no-such-probe: No such file or directory")


def test_a_hostile_answer_fails_the_probe_and_nothing_else(tmp_path: Path) -> None:
    async def scenario() -> ProbeResult:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 " + b"x" * 200_000)  # a status line without end
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, sock=loopback_listener())
        port = server.sockets[0].getsockname()[1]
        result = await run_probe(Probe(action=ProbeAction.HTTP), ProbeTarget(port, {}, tmp_path))
        server.close()
        return result

    result = asyncio.run(scenario())
    assert not result.ok and result.detail.startswith("GET /: "), result


def test_an_exec_probe_that_prints_without_end_keeps_only_the_first_bytes(tmp_path: Path) -> None:
    script = "head -c 50000000 /dev/zero | tr '\\0' x; exit 1"
    probe = Probe(action=ProbeAction.EXEC, command=("/bin/sh", "-c", script), timeout_seconds=10)
    result = probe_once(probe, ProbeTarget(1, {"PATH": os.environ["PATH"]}, tmp_path))
    assert not result.ok and result.detail.endswith(": " + "x" * 200)
