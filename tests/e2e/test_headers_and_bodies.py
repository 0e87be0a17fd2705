"""What reaches the app and what comes back, seen by an app nobody here wrote (httpbin)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from .harness import SHARED_CONFIG, Platform

pytestmark = pytest.mark.e2e

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
BODY_LIMIT = SHARED_CONFIG["max-request-body-bytes"]


def _echoed_headers(platform: Platform, service: str, **headers: str) -> dict[str, str]:
    # show_env=1: httpbin hides X-Forwarded-*, Via and the like unless asked.
    response = platform.request(service, "GET", "/get?show_env=1", headers=headers)
    assert response.status_code == 200, response.text
    # httpbin title-cases names; compare case-insensitively.
    return {name.lower(): value for name, value in response.json()["headers"].items()}


def test_router_keeps_host_and_adds_forwarding_headers(platform: Platform, httpbin: str) -> None:
    headers = _echoed_headers(platform, httpbin, **{"X-Custom": "kept as is"})
    assert headers["host"] == platform.host(httpbin)
    assert "127.0.0.1" in headers["x-forwarded-for"]
    assert headers["x-forwarded-proto"] == "http"
    assert "proto=http" in headers["forwarded"].lower()
    assert "for=" in headers["forwarded"].lower()
    assert TRACEPARENT.match(headers["traceparent"]), headers["traceparent"]
    assert headers["x-custom"] == "kept as is"


def test_router_appends_to_forwarded_for_and_keeps_a_traceparent(
    platform: Platform, httpbin: str
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = _echoed_headers(
        platform, httpbin, **{"X-Forwarded-For": "203.0.113.7", "traceparent": traceparent}
    )
    hops = [hop.strip() for hop in headers["x-forwarded-for"].split(",")]
    assert hops == ["203.0.113.7", "127.0.0.1"]
    assert headers["traceparent"] == traceparent


def test_each_request_gets_its_own_trace(platform: Platform, httpbin: str) -> None:
    first = _echoed_headers(platform, httpbin)["traceparent"]
    second = _echoed_headers(platform, httpbin)["traceparent"]
    assert first.split("-")[1] != second.split("-")[1]


def test_hop_by_hop_headers_are_not_forwarded(platform: Platform, httpbin: str) -> None:
    headers = _echoed_headers(
        platform,
        httpbin,
        **{"Connection": "keep-alive, X-Hop-Only", "X-Hop-Only": "1", "Keep-Alive": "timeout=5"},
    )
    assert "x-hop-only" not in headers
    assert "keep-alive" not in headers


def test_post_body_is_echoed(platform: Platform, httpbin: str) -> None:
    payload = {"name": "homerun", "numbers": list(range(100))}
    response = platform.request(httpbin, "POST", "/post", json=payload)
    assert response.status_code == 200, response.text
    assert response.json()["json"] == payload


def test_body_under_the_limit_passes_whole(platform: Platform, httpbin: str) -> None:
    body = b"x" * (BODY_LIMIT // 2)
    response = platform.request(httpbin, "POST", "/post", content=body)
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["data"]) == len(body)


def test_status_codes_pass_through(platform: Platform, httpbin: str) -> None:
    response = platform.request(httpbin, "GET", "/status/418")
    assert response.status_code == 418
    assert platform.request(httpbin, "GET", "/status/204").status_code == 204


def test_body_over_the_limit_gets_413(platform: Platform, httpbin: str) -> None:
    response = platform.request(httpbin, "POST", "/post", content=b"x" * (BODY_LIMIT + 1))
    assert response.status_code == 413, response.text[:500]


def test_chunked_body_over_the_limit_gets_413(platform: Platform, httpbin: str) -> None:
    def chunks() -> Iterator[bytes]:
        # No Content-Length: the router can only tell by counting as the body streams in.
        for _ in range(BODY_LIMIT // 65536 + 2):
            yield b"y" * 65536

    try:
        response = platform.request(httpbin, "POST", "/post", content=chunks())
    except httpx.HTTPError as error:
        pytest.fail(f"the router dropped the connection instead of answering 413: {error!r}")
    assert response.status_code == 413, response.text[:500]
