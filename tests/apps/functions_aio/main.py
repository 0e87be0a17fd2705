"""An async function (functions-framework's aio mode), named in project.toml: deployed with
plain `homerun deploy NAME --source .`."""

import asyncio

import functions_framework.aio


@functions_framework.aio.http
async def hello_async(request):
    await asyncio.sleep(0.01)
    name = request.query_params.get("name", "World")
    return f"Hello {name} from an async function!"
