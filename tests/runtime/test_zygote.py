"""ZygoteRuntime against real gunicorn and uvicorn: an instance forked from the revision's
zygote behaves as a spawned one does, and what cannot be forked safely is spawned."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from homerun.build import Artifact
from homerun.runtime import Instance, InstanceSpec
from homerun.runtime.process import ProcessRuntime
from homerun.runtime.zygote import ZygoteRuntime

from .helpers import (
    APPS,
    GUNICORN_SEED,
    UVICORN_DEFAULT,
    Leftovers,
    Output,
    Seeds,
    alive,
    first_response,
    gone,
    group_members,
    parent_of,
    report,
    spec,
)

# The first test also builds the seeds' virtualenvs (pip, from the registry).
pytestmark = pytest.mark.timeout(300)

# server -> (the seed whose virtualenv has it, its start command, the reporting app)
SERVERS: dict[str, tuple[Callable[[Seeds], Artifact], str, Path]] = {
    "gunicorn": (lambda seeds: seeds.flask, GUNICORN_SEED, APPS / "report_wsgi"),
    "uvicorn": (lambda seeds: seeds.fastapi, UVICORN_DEFAULT, APPS / "report_asgi"),
}


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@asynccontextmanager
async def opened(
    runtime: ZygoteRuntime | ProcessRuntime, leftovers: Leftovers
) -> AsyncIterator[Any]:
    """The runtime, open; on the way out its instances are killed and reaped, then it closes."""
    runtime.open()
    try:
        yield runtime
    finally:
        await leftovers.reap()
        runtime.close()


async def start(
    runtime: ZygoteRuntime | ProcessRuntime,
    instance_spec: InstanceSpec,
    leftovers: Leftovers,
    output: Output | None = None,
) -> Instance:
    instance = await runtime.start(instance_spec, output if output is not None else Output())
    leftovers.add(instance)
    return instance


def zygote_pid(runtime: ZygoteRuntime, revision: str) -> int:
    mode, reason = runtime.mode(revision)
    found = re.search(r"zygote pid (\d+)", reason)
    assert mode == "zygote" and found, (mode, reason)
    return int(found[1])


def comm_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as comm:
        return comm.read().strip()


def descriptor_targets(pid: int) -> list[str]:
    """What each open descriptor of pid points to (socket:[inode], pipe:[inode], a path)."""
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return targets


def platform_env(instance_spec: InstanceSpec) -> dict[str, str]:
    return {name: value for name, value in instance_spec.env.items() if name != "PATH"}


def without_port(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != "PORT"}


# -- the instance contract ------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_a_forked_instance_sees_what_a_spawned_one_sees(
    server: str, seeds: Seeds, leftovers: Leftovers
) -> None:
    seed, command, app = SERVERS[server]
    artifact = seed(seeds)
    revision = f"report-{server}-00001-abc"

    async def scenario() -> None:
        async with (
            opened(ZygoteRuntime(), leftovers) as zygotes,
            opened(ProcessRuntime(), leftovers) as spawner,
        ):
            first_output = Output()
            first_spec = spec(
                artifact, revision=revision, command=command, cwd=app, env={"GREETING": "hi"}
            )
            first = await start(zygotes, first_spec, leftovers, first_output)
            assert zygotes.mode(revision)[0] == "zygote", zygotes.mode(revision)
            forked = await report(first.port)

            spawned_spec = spec(
                artifact, revision=revision, command=command, cwd=app, env={"GREETING": "hi"}
            )
            spawned = await start(spawner, spawned_spec, leftovers)
            reference = await report(spawned.port)

            # The same environment as the spawned instance (with what the shell and Python add
            # to it, PWD and LC_CTYPE), but for its own PORT.
            assert without_port(forked["env"]) == without_port(reference["env"])
            assert platform_env(first_spec).items() <= forked["env"].items()
            assert forked["env"]["PORT"] == str(first_spec.port)
            assert forked["env"]["SET_BY_THE_APP"] == "at import"
            assert forked["env"]["K_SERVICE"] == f"report-{server}"
            assert forked["env"]["K_REVISION"] == revision
            assert forked["cwd"] == reference["cwd"] == str(app)
            assert forked["stdin"] == reference["stdin"] == ""
            # Its own session and process group, led by the process the runtime reports.
            assert forked["pgid"] == forked["sid"] == first.pid
            assert reference["pgid"] == reference["sid"] == spawned.pid
            assert first.pid != zygote_pid(zygotes, revision)
            # Named as exec'ing the command names a process (ps -o comm, top); the zygote apart.
            assert comm_of(first.pid) == comm_of(spawned.pid) == server
            assert comm_of(zygote_pid(zygotes, revision)) == "homerun-zygote"

            # stdout and stderr are the instance's log, import-time lines included.
            port = first_spec.port
            await first_output.wait_for("stdout", f"report on {port} (stdout)")
            await first_output.wait_for("stderr", f"report on {port} (stderr)")
            await first_output.wait_for("stdout", "main imported (stdout)")
            await first_output.wait_for("stderr", "main imported (stderr)")

            # A second fork: its own port, group and log.
            second_output = Output()
            second_spec = spec(artifact, revision=revision, command=command, cwd=app)
            second = await start(zygotes, second_spec, leftovers, second_output)
            seen = await report(second.port)
            assert seen["env"]["PORT"] == str(second_spec.port)
            assert seen["pgid"] == second.pid != first.pid
            await second_output.wait_for("stdout", f"report on {second_spec.port} (stdout)")
            assert not first_output.has("stdout", f"report on {second_spec.port}")

    run(scenario())


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_stops_it_gracefully_with_a_spawned_instances_status(
    server: str, seeds: Seeds, leftovers: Leftovers
) -> None:
    seed, command, app = SERVERS[server]
    artifact = seed(seeds)
    revision = f"term-{server}-00001-abc"
    graceful = {"gunicorn": "Handling signal: term", "uvicorn": "Shutting down"}[server]

    async def scenario() -> None:
        async with (
            opened(ZygoteRuntime(), leftovers) as zygotes,
            opened(ProcessRuntime(), leftovers) as spawner,
        ):
            statuses = []
            for runtime in (zygotes, spawner):
                output = Output()
                instance_spec = spec(artifact, revision=revision, command=command, cwd=app)
                instance = await start(runtime, instance_spec, leftovers, output)
                await report(instance.port)
                members = group_members(instance.pid)
                instance.signal(signal.SIGTERM)
                statuses.append(await asyncio.wait_for(instance.wait(), 15))
                assert instance.returncode == statuses[-1]
                await output.wait_for("stderr", graceful)
                assert await gone(members)
            assert zygotes.mode(revision)[0] == "zygote"
            assert statuses[0] == statuses[1], f"forked {statuses[0]}, spawned {statuses[1]}"

    run(scenario())


@pytest.mark.parametrize("server", SERVERS)
def test_sigkill_takes_the_whole_group(server: str, seeds: Seeds, leftovers: Leftovers) -> None:
    seed, command, app = SERVERS[server]
    artifact = seed(seeds)
    revision = f"kill-{server}-00001-abc"

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            instance = await start(
                zygotes, spec(artifact, revision=revision, command=command, cwd=app), leftovers
            )
            seen = await report(instance.port)
            members = group_members(instance.pid)
            assert instance.pid in members and seen["pid"] in members
            instance.signal(signal.SIGKILL)
            assert await asyncio.wait_for(instance.wait(), 10) == -signal.SIGKILL
            assert await gone(members)
            assert alive(zygote_pid(zygotes, revision))  # the zygote outlives its instances

    run(scenario())


def test_gunicorn_without_bind_listens_on_port_as_it_would_spawned(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    """`web: gunicorn main:app`: gunicorn's default --bind is 0.0.0.0:$PORT."""

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            revision = "procfile-00001-abc"
            for _ in range(2):
                instance_spec = spec(
                    seeds.flask,
                    revision=revision,
                    command="gunicorn main:app",
                    cwd=APPS / "report_wsgi",
                )
                instance = await start(zygotes, instance_spec, leftovers)
                seen = await report(instance.port)
                assert seen["env"]["PORT"] == str(instance_spec.port)
                assert zygotes.mode(revision)[0] == "zygote"

    run(scenario())


def test_exec_form_with_each_instances_own_port(seeds: Seeds, leftovers: Leftovers) -> None:
    """`--command gunicorn --args=--bind=:$(PORT),main:app`: the supervisor expands $(PORT), so
    every instance's argv carries its own port."""

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            revision = "k8s-00001-abc"
            for _ in range(2):
                template = spec(seeds.flask, revision=revision, cwd=APPS / "report_wsgi")
                argv = ["gunicorn", f"--bind=127.0.0.1:{template.port}", "main:app"]
                instance_spec = replace(template, argv=argv)
                instance = await start(zygotes, instance_spec, leftovers)
                seen = await report(instance.port)
                assert seen["env"]["PORT"] == str(instance.port)
                assert zygotes.mode(revision)[0] == "zygote", zygotes.mode(revision)

    run(scenario())


def test_the_seed_apps_run_forked_unchanged(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            for artifact, path, expected in (
                (seeds.flask, "/", b'{"hello":"world"}'),
                (seeds.fastapi, "/usuarios", "Usuário 1".encode()),
            ):
                revision = f"seed-{artifact.server}-00001-abc"
                for _ in range(2):
                    instance_spec = spec(artifact, revision=revision, argv=list(artifact.argv))
                    instance = await start(zygotes, instance_spec, leftovers)
                    status, body = await first_response(instance.port, path)
                    assert status == 200 and expected in body, body
                    assert zygotes.mode(revision)[0] == "zygote", zygotes.mode(revision)
                    instance.signal(signal.SIGTERM)
                    await asyncio.wait_for(instance.wait(), 15)

    run(scenario())


def test_an_instance_inherits_no_descriptor_of_the_zygote(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            revision = "fds-00001-abc"
            instance = await start(
                zygotes,
                spec(
                    seeds.fastapi,
                    revision=revision,
                    command=UVICORN_DEFAULT,
                    cwd=APPS / "report_asgi",
                ),
                leftovers,
            )
            await report(instance.port)
            zygotes_own = set(descriptor_targets(zygote_pid(zygotes, revision))) - {os.devnull}
            inherited = zygotes_own & set(descriptor_targets(instance.pid))
            assert not inherited, inherited

    run(scenario())


def test_a_slow_import_spawns_meanwhile_then_forks(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(import_wait=0.3), leftovers) as zygotes:
            revision = "slow-00001-abc"
            slow_spec = spec(seeds.flask, revision=revision, cwd=APPS / "slow_import")
            first = await start(zygotes, slow_spec, leftovers)
            assert "instances started meanwhile are spawned" in zygotes.mode(revision)[1]
            assert parent_of(first.pid) == os.getpid()  # spawned: our child, not the zygote's
            assert (await first_response(first.port))[0] == 200
            for _ in range(300):  # the zygote's import takes 2 s
                if "imported once" in zygotes.mode(revision)[1]:
                    break
                await asyncio.sleep(0.05)
            later_spec = spec(seeds.flask, revision=revision, cwd=APPS / "slow_import")
            later = await start(zygotes, later_spec, leftovers)
            assert parent_of(later.pid) == zygote_pid(zygotes, revision)
            assert (await first_response(later.port))[0] == 200

    run(scenario())


# -- what is spawned instead, and why -------------------------------------------------


@pytest.mark.parametrize(
    ("app", "reason"),
    [
        ("thread_at_import", "starts threads while it is imported: 1 besides the main one"),
        ("socket_at_import", "keeps a socket open"),
        ("port_at_import", "reads $PORT while it is imported (main.py:"),
    ],
)
def test_an_app_unsafe_to_fork_is_spawned_and_says_why(
    app: str, reason: str, seeds: Seeds, leftovers: Leftovers
) -> None:
    revision = f"{app.replace('_', '')}-00001-abc"

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            for _ in range(2):
                instance_spec = spec(seeds.flask, revision=revision, cwd=APPS / app)
                instance = await start(zygotes, instance_spec, leftovers)
                mode, why = zygotes.mode(revision)
                assert mode == "spawn" and reason in why, why
                status, _ = await first_response(instance.port)
                assert status == 200

    run(scenario())


def test_the_thread_is_named_in_the_reason(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            instance_spec = spec(seeds.flask, revision="t-00001-abc", cwd=APPS / "thread_at_import")
            await start(zygotes, instance_spec, leftovers)
            assert "cache-warmer" in zygotes.mode("t-00001-abc")[1]

    run(scenario())


def test_an_app_that_fails_to_import_is_spawned_and_fails_as_usual(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            output = Output()
            instance_spec = spec(
                seeds.flask, revision="broken-00001-abc", cwd=APPS / "broken_import"
            )
            instance = await start(zygotes, instance_spec, leftovers, output)
            mode, why = zygotes.mode("broken-00001-abc")
            assert mode == "spawn", why
            assert "importing the app failed" in why and "the database URL is missing" in why
            # The spawned gunicorn fails as it would anyway, and its log says why, once.
            assert await asyncio.wait_for(instance.wait(), 20) != 0
            assert sum("the database URL is missing" in line for _, line in output.lines) >= 1

    run(scenario())


def test_a_zygote_that_dies_importing_is_given_up_for_spawning(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            revision = "exits-00001-abc"
            instance_spec = spec(seeds.flask, revision=revision, cwd=APPS / "exit_at_import")
            await start(zygotes, instance_spec, leftovers)
            mode, why = zygotes.mode(revision)
            assert mode == "spawn" and "exited while importing the app (exit code 3" in why, why

    run(scenario())


@pytest.mark.parametrize(
    ("server", "script", "reason"),
    [
        ("gunicorn", "echo starting && exec gunicorn --bind :$PORT main:app", "shell script"),
        ("gunicorn", "exec gunicorn --bind :$PORT --name $HOME main:app", "expansion"),
        ("gunicorn", "exec flask run --port $PORT", "does not start gunicorn or uvicorn"),
        ("gunicorn", "exec gunicorn --bind :$PORT -k gevent main:app", "worker class gevent"),
        ("gunicorn", "exec gunicorn --bind :$PORT --daemon main:app", "--daemon"),
        ("uvicorn", "exec uvicorn main:app --port $PORT --workers 2", "--workers 2"),
        ("uvicorn", "exec uvicorn main:app --port $PORT --reload", "--reload"),
        ("uvicorn", "exec uvicorn main:app --port $PORT --no-such-option", "rejected its options"),
    ],
)
def test_a_command_the_zygote_cannot_run_is_spawned(
    server: str, script: str, reason: str, seeds: Seeds, leftovers: Leftovers
) -> None:
    seed, _, app = SERVERS[server]

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            argv = ["/bin/sh", "-c", script]
            instance_spec = spec(seed(seeds), revision="other-00001-abc", argv=argv, cwd=app)
            await start(zygotes, instance_spec, leftovers)
            mode, why = zygotes.mode("other-00001-abc")
            assert mode == "spawn" and reason in why, why

    run(scenario())


def test_python_http_server_is_spawned_and_serves(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            instance_spec = spec(seeds.flask, revision="static-00001-abc", argv=[])
            argv = ["python", "-m", "http.server", "--bind", "127.0.0.1", str(instance_spec.port)]
            instance = await start(zygotes, replace(instance_spec, argv=argv), leftovers)
            assert zygotes.mode("static-00001-abc")[0] == "spawn"
            status, _ = await first_response(instance.port)
            assert status == 200

    run(scenario())


# -- lifetimes ------------------------------------------------------------------------


def test_a_killed_zygote_takes_its_instances_down_and_is_started_again(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            revision = "lost-00001-abc"
            instance = await start(zygotes, spec(seeds.flask, revision=revision), leftovers)
            await first_response(instance.port)
            members = group_members(instance.pid)
            first_zygote = zygote_pid(zygotes, revision)
            os.kill(first_zygote, signal.SIGKILL)
            assert await asyncio.wait_for(instance.wait(), 10) == -signal.SIGKILL
            assert await gone(members)
            again = await start(zygotes, spec(seeds.flask, revision=revision), leftovers)
            status, _ = await first_response(again.port)
            assert status == 200
            assert zygote_pid(zygotes, revision) != first_zygote

    run(scenario())


def test_close_stops_the_zygote_and_whatever_instances_are_left(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        zygotes = ZygoteRuntime()
        async with opened(zygotes, leftovers):
            instance = await start(zygotes, spec(seeds.flask, revision="c-00001-abc"), leftovers)
            await first_response(instance.port)
            members = group_members(instance.pid)
            zygote = zygote_pid(zygotes, "c-00001-abc")
        assert await gone([*members, zygote])
        assert await asyncio.wait_for(instance.wait(), 5) == -signal.SIGKILL

    run(scenario())


def test_forget_stops_a_revisions_zygote(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            revision = "f-00001-abc"
            instance = await start(zygotes, spec(seeds.flask, revision=revision), leftovers)
            await first_response(instance.port)
            zygote = zygote_pid(zygotes, revision)
            instance.signal(signal.SIGTERM)
            await asyncio.wait_for(instance.wait(), 15)
            zygotes.forget(revision)
            assert await gone([zygote])
            assert "stopped" in zygotes.mode(revision)[1]
            again = await start(zygotes, spec(seeds.flask, revision=revision), leftovers)
            assert (await first_response(again.port))[0] == 200
            assert zygote_pid(zygotes, revision) != zygote

    run(scenario())


@pytest.mark.parametrize("server", SERVERS)
def test_the_daemons_death_takes_the_zygote_and_its_instances_down(
    server: str, seeds: Seeds, leftovers: Leftovers
) -> None:
    seed, command, app = SERVERS[server]
    artifact = seed(seeds)
    specs = [
        spec(artifact, revision=f"orphan-{server}-00001-abc", command=command, cwd=app)
        for _ in range(2)
    ]
    # Plain fields only: the harness makes its InstanceSpec from them (no mounts here).
    fields = [
        {key: value for key, value in asdict(one).items() if key != "mounts"}
        | {"cwd": str(one.cwd)}
        for one in specs
    ]
    harness = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("zygote_harness.py")), json.dumps(fields)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )

    async def scenario() -> None:
        assert harness.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(harness.stdout.readline), 60)
        started = json.loads(line)
        assert started["mode"] == "zygote" and started["zygote"], started
        leftovers.groups.extend([*started["instances"], started["zygote"]])
        for one in specs:
            await report(one.port)  # gunicorn's worker is up too
        members = [pid for pgid in started["instances"] for pid in group_members(pgid)]
        assert len(members) >= 2
        harness.kill()  # as the kernel kills a daemon: no cleanup of its own
        harness.wait()
        assert await gone([*members, started["zygote"]])

    try:
        run(scenario())
    finally:
        harness.kill()
        harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
