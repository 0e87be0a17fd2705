"""How long zygotes live, against real gunicorn and uvicorn: revisions' zygotes are forked from
a base per virtualenv and server; a revision's zygote stops when the revision is forgotten, a
base with its last revision; idle zygotes are stopped least recently used first under a memory
budget, and the next start still works."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from homerun.runtime import Instance, InstanceSpec
from homerun.runtime.zygote import ZygoteRuntime

from .helpers import (
    APPS,
    UVICORN_DEFAULT,
    Leftovers,
    Output,
    Seeds,
    alive,
    first_response,
    gone,
    parent_of,
    spec,
)

# The first test may also build the seeds' virtualenvs.
pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@asynccontextmanager
async def opened(runtime: ZygoteRuntime, leftovers: Leftovers) -> AsyncIterator[ZygoteRuntime]:
    runtime.open()
    try:
        yield runtime
    finally:
        await leftovers.reap()
        runtime.close()


async def serve_once(
    runtime: ZygoteRuntime,
    instance_spec: InstanceSpec,
    leftovers: Leftovers,
    path: str = "/report",
) -> Instance:
    """Start an instance, get a 200 from it, stop it (SIGTERM) and wait until it is gone."""
    instance = await runtime.start(instance_spec, Output())
    leftovers.add(instance)
    status, body = await first_response(instance.port, path)
    assert status == 200, body
    instance.signal(signal.SIGTERM)
    await asyncio.wait_for(instance.wait(), 15)
    return instance


def pids(runtime: ZygoteRuntime, revision: str) -> tuple[int, int | None]:
    """(the revision's zygote, the base it was forked from or None), as `describe` says."""
    mode, reason = runtime.mode(revision)
    zygote = re.search(r"zygote pid (\d+)", reason)
    assert mode == "zygote" and zygote, (mode, reason)
    base = re.search(r"base pid (\d+)", reason)
    return int(zygote[1]), int(base[1]) if base else None


async def until(condition: Any, within: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def comm_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as comm:
        return comm.read().strip()


def flask_spec(seeds: Seeds, revision: str, **env: str) -> InstanceSpec:
    return spec(seeds.flask, revision=revision, cwd=APPS / "report_wsgi", env=env)


# -- bases ----------------------------------------------------------------------------


def test_revisions_of_one_virtualenv_share_a_base_and_start_fast_from_zero(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            await serve_once(zygotes, flask_spec(seeds, "a-00001-abc"), leftovers)
            await serve_once(zygotes, flask_spec(seeds, "b-00001-abc"), leftovers)
            zygote_a, base_a = pids(zygotes, "a-00001-abc")
            zygote_b, base_b = pids(zygotes, "b-00001-abc")
            assert base_a is not None and base_a == base_b, zygotes.mode("b-00001-abc")
            assert zygote_a != zygote_b
            assert parent_of(zygote_a) == parent_of(zygote_b) == base_a
            assert parent_of(base_a) == os.getpid()
            assert "imported gunicorn and flask once" in zygotes.mode("a-00001-abc")[1]
            assert comm_of(base_a) == "homerun-base"

    run(scenario())


def test_a_revision_whose_variables_differ_from_the_bases_gets_a_zygote_of_its_own(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    """gunicorn reads WEB_CONCURRENCY as it is imported: a base imported without it cannot
    stand for a revision that sets it."""

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            await serve_once(zygotes, flask_spec(seeds, "plain-00001-abc"), leftovers)
            own = flask_spec(seeds, "own-00001-abc", WEB_CONCURRENCY="1")
            await serve_once(zygotes, own, leftovers)
            zygote, base = pids(zygotes, "own-00001-abc")
            assert base is None
            assert parent_of(zygote) == os.getpid()
            assert "reads WEB_CONCURRENCY" in zygotes.mode("own-00001-abc")[1]

    run(scenario())


def test_an_app_folder_with_its_own_copy_of_a_framework_module_gets_a_zygote_of_its_own(
    seeds: Seeds, leftovers: Leftovers, tmp_path: Path
) -> None:
    """Spawned, uvicorn puts the app's folder first on sys.path before FastAPI is imported, so
    the app's own `annotated_doc` would be the one imported: a base that imported the
    virtualenv's cannot stand for it."""
    site_packages = next((seeds.fastapi.venv or Path("/")).glob("lib/python*/site-packages"))
    app = tmp_path / "app"
    shutil.copytree(seeds.fastapi.cwd, app)
    shutil.copytree(site_packages / "annotated_doc", app / "annotated_doc")

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            plain = spec(seeds.fastapi, revision="plain-00001-abc", command=UVICORN_DEFAULT)
            await serve_once(zygotes, plain, leftovers, "/usuarios")
            _, base = pids(zygotes, "plain-00001-abc")
            assert base is not None
            vendored = spec(
                seeds.fastapi, revision="vendor-00001-abc", command=UVICORN_DEFAULT, cwd=app
            )
            await serve_once(zygotes, vendored, leftovers, "/usuarios")
            _, base = pids(zygotes, "vendor-00001-abc")
            assert base is None
            assert "annotated_doc" in zygotes.mode("vendor-00001-abc")[1]

    run(scenario())


# -- forget: retirement and deletion ----------------------------------------------------


def test_forget_stops_the_revisions_zygote_and_the_base_with_its_last_revision(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            await serve_once(zygotes, flask_spec(seeds, "a-00001-abc"), leftovers)
            await serve_once(zygotes, flask_spec(seeds, "b-00001-abc"), leftovers)
            zygote_a, base = pids(zygotes, "a-00001-abc")
            zygote_b, _ = pids(zygotes, "b-00001-abc")
            assert base is not None

            zygotes.forget("a-00001-abc")  # retired, or deleted
            assert await gone([zygote_a])
            assert alive(zygote_b) and alive(base)  # b still uses the base
            assert "stopped with the revision" in zygotes.mode("a-00001-abc")[1]

            zygotes.forget("b-00001-abc")
            assert await gone([zygote_b, base])

            # A revision started again later gets a new base and zygote.
            await serve_once(zygotes, flask_spec(seeds, "a-00001-abc"), leftovers)
            again, new_base = pids(zygotes, "a-00001-abc")
            assert again != zygote_a and new_base not in (None, base)

    run(scenario())


def test_forget_keeps_a_zygote_an_instance_still_runs_from(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    """A revision routed again after its retirement (a rollback) may have started instances
    from the zygote before the old unit's last instance went: those are not killed."""

    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            instance = await zygotes.start(flask_spec(seeds, "r-00001-abc"), Output())
            leftovers.add(instance)
            assert (await first_response(instance.port, "/report"))[0] == 200
            zygote, base = pids(zygotes, "r-00001-abc")
            zygotes.forget("r-00001-abc")
            await asyncio.sleep(0.2)
            assert alive(zygote) and instance.returncode is None
            instance.signal(signal.SIGTERM)
            await asyncio.wait_for(instance.wait(), 15)
            zygotes.forget("r-00001-abc")
            assert await gone([zygote, base or zygote])

    run(scenario())


# -- the memory budget ----------------------------------------------------------------


def test_under_the_budget_the_least_recently_used_idle_zygote_goes_and_starts_again(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    """Every zygote counts 10 MiB here: the base and two idle revisions' are 30, over a budget
    of 25, so the one used longest ago goes; its next start forks a new one from the base."""

    async def scenario() -> None:
        runtime = ZygoteRuntime(memory_budget=25 * MiB, measure=lambda pid: 10 * MiB)
        async with opened(runtime, leftovers) as zygotes:
            await serve_once(zygotes, flask_spec(seeds, "old-00001-abc"), leftovers)
            old, base = pids(zygotes, "old-00001-abc")
            await serve_once(zygotes, flask_spec(seeds, "new-00001-abc"), leftovers)
            new, _ = pids(zygotes, "new-00001-abc")
            assert await gone([old])
            assert alive(new) and base is not None and alive(base)
            mode, why = zygotes.mode("old-00001-abc")
            assert mode == "zygote" and "stopped while the revision was idle" in why, why

            started = asyncio.get_running_loop().time()
            await serve_once(zygotes, flask_spec(seeds, "old-00001-abc"), leftovers)
            took = asyncio.get_running_loop().time() - started
            again, same_base = pids(zygotes, "old-00001-abc")
            assert again != old and same_base == base
            assert took < 5, took  # no interpreter start or framework import: see bench/
            # Now "new" is the least recently used: it goes in turn.
            assert await gone([new])

    run(scenario())


def test_a_budget_of_nothing_stops_every_idle_zygote_and_the_next_start_still_works(
    seeds: Seeds, leftovers: Leftovers
) -> None:
    """Measured for real (PSS from /proc): with a budget of 0 nothing is kept once idle, the
    base included (after the zygote forked from it)."""

    async def scenario() -> None:
        async with opened(ZygoteRuntime(memory_budget=0), leftovers) as zygotes:
            revision = "zero-00001-abc"
            instance = await zygotes.start(flask_spec(seeds, revision), Output())
            leftovers.add(instance)
            assert (await first_response(instance.port, "/report"))[0] == 200
            zygote, base = pids(zygotes, revision)
            assert base is not None
            await asyncio.sleep(0.3)
            assert alive(zygote) and alive(base)  # not idle while its instance runs
            instance.signal(signal.SIGTERM)
            await asyncio.wait_for(instance.wait(), 15)
            assert await gone([zygote, base])
            await serve_once(zygotes, flask_spec(seeds, revision), leftovers)
            assert await until(
                lambda: "stopped while the revision was idle" in zygotes.mode(revision)[1]
            )

    run(scenario())


def test_without_a_budget_idle_zygotes_stay(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        async with opened(ZygoteRuntime(), leftovers) as zygotes:
            await serve_once(zygotes, flask_spec(seeds, "kept-00001-abc"), leftovers)
            zygote, base = pids(zygotes, "kept-00001-abc")
            await asyncio.sleep(0.3)
            assert alive(zygote) and base is not None and alive(base)

    run(scenario())


def test_close_stops_bases_zygotes_and_instances(seeds: Seeds, leftovers: Leftovers) -> None:
    async def scenario() -> None:
        zygotes = ZygoteRuntime()
        zygotes.open()
        try:
            instance = await zygotes.start(flask_spec(seeds, "c-00001-abc"), Output())
            leftovers.add(instance)
            assert (await first_response(instance.port, "/report"))[0] == 200
            zygote, base = pids(zygotes, "c-00001-abc")
        finally:
            zygotes.close()
        assert await gone([instance.pid, zygote, base or zygote])
        assert await asyncio.wait_for(instance.wait(), 5) == -signal.SIGKILL

    run(scenario())
