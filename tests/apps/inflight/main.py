"""Counts its own requests in flight, so a test can check the router's per-instance cap.

`/work` sleeps without blocking the event loop and counts how many `/work` requests this
process holds at once; both report the pid and $PORT, so a test can tell instances apart, and
`/stats` (not counted) reports the most seen at once. One uvicorn worker runs one event loop,
so plain integers are safe.
"""

import asyncio
import os

from fastapi import FastAPI

app = FastAPI()

in_flight = 0
max_in_flight = 0
served = 0


@app.get("/work")
async def work(seconds: float = 0.3):
    global in_flight, max_in_flight, served
    in_flight += 1
    max_in_flight = max(max_in_flight, in_flight)
    try:
        await asyncio.sleep(seconds)
    finally:
        in_flight -= 1
        served += 1
    return {"pid": os.getpid(), "port": int(os.environ["PORT"])}


@app.get("/stats")
async def stats():
    return {
        "pid": os.getpid(),
        "port": int(os.environ["PORT"]),
        "in_flight": in_flight,
        "max_in_flight": max_in_flight,
        "served": served,
    }
