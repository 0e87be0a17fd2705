"""Stands in for the daemon: a ZygoteRuntime that starts the given instances, prints their pids
and the zygote's, then waits to be killed (the test kills it as a daemon may die, by SIGKILL).

    python zygote_harness.py '[{"name": ..., "argv": [...], "env": {...}, "cwd": ..., ...}]'
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from homerun.runtime import InstanceSpec
from homerun.runtime.zygote import ZygoteRuntime


async def listening(port: int, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.01)
            continue
        writer.close()
        return


async def main(specs: list[dict[str, Any]]) -> None:
    runtime = ZygoteRuntime()
    runtime.open()
    instances = []
    for fields in specs:
        spec = InstanceSpec(**dict(fields, cwd=Path(fields["cwd"])))
        instance = await runtime.start(spec, lambda stream, line: None)
        await listening(spec.port)
        instances.append(instance.pid)
    mode, reason = runtime.mode(str(specs[0]["revision"]))
    zygote = re.search(r"zygote pid (\d+)", reason)
    report = {"mode": mode, "instances": instances, "zygote": int(zygote[1]) if zygote else None}
    print(json.dumps(report), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
