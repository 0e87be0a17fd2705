"""cli/_projection.py: gcloud's --format over Knative resources."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from homerun.cli._projection import parse_format, render
from homerun.errors import HomerunError


def service(name: str, percent: int = 100) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "web", "env": "prod"}},
        "status": {
            "url": f"http://{name}.localhost:8080",
            "latestReadyRevisionName": f"{name}-00001-abc",
            "traffic": [
                {"revisionName": f"{name}-00001-abc", "percent": percent},
                {"revisionName": f"{name}-00002-def", "percent": 100 - percent, "tag": "b"},
            ],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def show(text: str, resources: list[dict[str, Any]], listing: bool = True) -> str:
    return render(resources, parse_format(text, ("text",)), listing=listing)


def test_value_prints_the_keys_tab_separated_one_resource_a_line() -> None:
    assert show("value(status.url)", [service("a")], listing=False) == "http://a.localhost:8080\n"
    assert show("value(metadata.name, status.url)", [service("a"), service("b")]) == (
        "a\thttp://a.localhost:8080\nb\thttp://b.localhost:8080\n"
    )


def test_value_joins_lists_and_mappings_as_gcloud_does() -> None:
    assert show("value(status.traffic[].percent)", [service("a", 90)]) == "90;10\n"
    assert show("value(status.traffic[1].tag,metadata.labels)", [service("a")]) == (
        "b\tteam=web;env=prod\n"
    )
    assert show("value(status.nothing,status.traffic[5].tag)", [service("a")]) == "\t\n"


def test_table_has_headings_from_the_keys_or_their_labels() -> None:
    text = show(
        "table(metadata.name:label=SERVICE, status.latestReadyRevisionName, status.url)",
        [service("a"), service("longer")],
    )
    assert text.splitlines() == [
        "SERVICE  LATEST_READY_REVISION_NAME  URL",
        "a        a-00001-abc                 http://a.localhost:8080",
        "longer   longer-00001-abc            http://longer.localhost:8080",
    ]
    assert show("table[no-heading](metadata.name)", [service("a")]) == "a\n"


def test_csv() -> None:
    assert show("csv(metadata.name,status.url)", [service("a")]) == (
        "NAME,URL\na,http://a.localhost:8080\n"
    )


def test_json_and_yaml_print_the_resources_or_a_projection_of_them() -> None:
    assert json.loads(show("json", [service("a")], listing=False)) == service("a")
    assert json.loads(show("json", [service("a"), service("b")])) == [service("a"), service("b")]
    assert yaml.safe_load(show("yaml", [service("a")], listing=False)) == service("a")
    assert list(yaml.safe_load_all(show("yaml", [service("a"), service("b")]))) == [
        service("a"),
        service("b"),
    ]
    assert json.loads(show("json(metadata.name,status.url)", [service("a")], listing=False)) == {
        "metadata": {"name": "a"},
        "status": {"url": "http://a.localhost:8080"},
    }
    assert show("none", [service("a")]) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("xml", "not a format homerun prints; use one of text, json, yaml"),
        ("value()", "value() needs the keys"),
        ("value(status.url.join(','))", "transforms like .join() are not supported"),
        ("table[box](metadata.name)", "attribute [box] is not supported"),
        ("value(metadata.name:format=x)", "key attribute 'format'"),
    ],
)
def test_what_is_not_supported_is_named(text: str, message: str) -> None:
    with pytest.raises(HomerunError, match=re.escape(message)):
        parse_format(text, ("text",))
