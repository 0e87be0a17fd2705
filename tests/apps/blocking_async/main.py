"""An async endpoint that calls a blocking library: every request stalls the event loop."""

import time

from fastapi import FastAPI

app = FastAPI()


def legacy_lookup(seconds):
    time.sleep(seconds)  # a client library without async support, say
    return {"found": True}


@app.get("/lookup")
async def lookup(seconds: float = 0.2):
    return legacy_lookup(min(seconds, 5.0))


@app.get("/health")
async def health():
    return {"ok": True}
