"""A container engine command (`podman rm`, `mount`, `image inspect`) run to its end from the
event loop, in a session of its own, with a time limit."""

from __future__ import annotations

import asyncio

ENGINE_SECONDS = 60.0


async def engine_call(command: list[str], *, check: bool = True) -> str:
    """Its standard output. OSError when it takes over ENGINE_SECONDS (it is killed), or, with
    `check`, when it fails: the last line it printed on stderr says why."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), ENGINE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        shown = " ".join(command[:1] + command[-3:])
        raise OSError(f"`{shown}` took over {ENGINE_SECONDS:g} s") from None
    if check and process.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()[-1:]
        raise OSError(said[0] if said else f"exit {process.returncode}")
    return out.decode(errors="replace")
