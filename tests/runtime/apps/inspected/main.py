"""A Starlette app with an async endpoint that blocks the loop and a sync one that takes a
thread of anyio's pool: what the runtime inspector must see."""

import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


def legacy_lookup(seconds):
    time.sleep(seconds)  # a blocking client library, called from a coroutine
    return {"found": True}


async def lookup(request):
    return JSONResponse(legacy_lookup(float(request.query_params.get("seconds", "0.25"))))


def produtos(request):
    time.sleep(float(request.query_params.get("seconds", "1")))
    return JSONResponse({"produtos": ["Produto 1", "Produto 2"]})


async def health(request):
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[Route("/lookup", lookup), Route("/produtos", produtos), Route("/health", health)]
)
