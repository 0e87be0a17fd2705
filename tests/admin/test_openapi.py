"""The admin API's OpenAPI description covers every route of the app, and only those."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from homerun.admin.api import create_app
from homerun.admin.openapi import openapi_document


def test_every_route_is_described_with_its_methods() -> None:
    # Listing the routes calls no handler: no control plane is needed behind them.
    app = create_app(control=None, shutdown=lambda: None)  # type: ignore[arg-type]
    routed = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    document: dict[str, Any] = openapi_document()
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routed == described


def test_request_bodies_refer_to_described_schemas() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for item in document["paths"].values():
        for operation in item.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            reference = (body or {}).get("schema", {}).get("$ref")
            if reference:
                assert reference.rsplit("/", 1)[1] in schemas
    assert "RevisionChanges" in schemas  # DeployRequest's nested model
