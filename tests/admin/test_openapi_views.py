"""The OpenAPI document's answers come from the views the control plane returns."""

from __future__ import annotations

import json
from typing import Any

from homerun.admin.openapi import openapi_document
from homerun.model.views import ServiceSummary


def references(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"].rsplit("/", 1)[1]} if "$ref" in value else set()
        return found.union(*(references(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(references(item) for item in value))
    return set()


def test_every_reference_resolves_and_answers_name_their_views() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    assert references(document) <= set(schemas)
    answer = document["paths"]["/v1/services"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["items"]["$ref"].endswith(
        "/ServiceSummary"
    )
    deploy = document["paths"]["/v1/services/{name}/deploy"]["post"]["responses"]["200"]
    assert deploy["content"]["application/x-ndjson"]["schema"]["$ref"].endswith("/DeployEvent")


def test_the_schema_is_the_views_own() -> None:
    schema = openapi_document()["components"]["schemas"]["ServiceSummary"]
    assert set(schema["properties"]) == set(ServiceSummary.model_fields)
    json.dumps(schema)  # plain JSON
