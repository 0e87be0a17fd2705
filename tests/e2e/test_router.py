"""The data plane end to end: host routing, streaming both ways, WebSockets, timeouts, failures
and the per-instance concurrency cap, all through a real router to real uvicorn instances."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.sync.client import connect as websocket_connect

from .harness import APPS, Platform

pytestmark = pytest.mark.e2e

STREAMING = APPS / "streaming"


def _raw_get(platform: Platform, service: str, path: str) -> socket.socket:
    """Send a GET on a bare socket and return the socket, to read or drop the response."""
    connection = socket.create_connection(("127.0.0.1", platform.port), timeout=30)
    request = f"GET {path} HTTP/1.1\r\nHost: {platform.host(service)}\r\n\r\n"
    connection.sendall(request.encode())
    return connection


def test_unknown_host_gets_404(platform: Platform) -> None:
    response = platform.request("no-such-service", "GET", "/")
    assert response.status_code == 404
    assert len(response.content) < 1024
    assert response.headers.get("content-type", "").startswith("text/plain")


def test_keep_alive_serves_several_requests_on_one_connection(
    platform: Platform, streaming: str
) -> None:
    connection = socket.create_connection(("127.0.0.1", platform.port), timeout=30)
    with connection, connection.makefile("rb") as reader:
        for _ in range(3):
            request = f"GET /inflight HTTP/1.1\r\nHost: {platform.host(streaming)}\r\n\r\n"
            connection.sendall(request.encode())
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            length = None
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None, "expected a sized JSON body"
            assert json.loads(reader.read(length))["in_flight"] >= 0


def test_server_sent_events_arrive_one_by_one(platform: Platform, streaming: str) -> None:
    arrivals = []
    with platform.client(streaming) as client:
        with client.stream("GET", "/sse", params={"events": 5, "interval": 0.3}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
    # Written 0.3 s apart; a buffering proxy delivers them all at once at the end.
    assert arrivals[-1] - arrivals[0] >= 0.9, gaps
    assert min(gaps) >= 0.1, gaps


def test_request_body_streams_to_the_app(platform: Platform, streaming: str) -> None:
    pieces = [bytes([number]) * 50_000 for number in range(10)]
    response = platform.request(streaming, "POST", "/echo", content=iter(pieces))
    assert response.status_code == 200
    assert response.content == b"".join(pieces)


def test_websocket_echo_through_the_router(platform: Platform, streaming: str) -> None:
    # websockets names the Host from the URI; the socket itself goes to the router on loopback.
    tcp = socket.create_connection(("127.0.0.1", platform.port), timeout=30)
    uri = f"ws://{platform.host(streaming)}/ws"
    with websocket_connect(uri, sock=tcp, proxy=None, open_timeout=30) as websocket:
        for message in ("hello", "olá", "x" * 70_000):
            websocket.send(message)
            assert websocket.recv(timeout=10) == f"echo: {message}"


def test_request_timeout_gives_504(platform: Platform) -> None:
    platform.ensure_deployed("slowpoke", STREAMING, "--timeout", "1")
    platform.env_of("slowpoke")  # the instance is up, so the timeout measures the request alone
    started = time.monotonic()
    response = platform.request("slowpoke", "GET", "/slow", params={"seconds": 3})
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    assert elapsed < 2.8, f"504 came after {elapsed:.2f}s, past the 1 s timeout"
    # The timed-out request gave its slot back.
    assert platform.request("slowpoke", "GET", "/env", timeout=10).status_code == 200


def test_instance_dying_mid_request_gives_502_then_a_new_instance(platform: Platform) -> None:
    platform.ensure_deployed("crashy", STREAMING)
    before = platform.env_of("crashy")
    response = platform.request("crashy", "GET", "/crash")
    assert response.status_code == 502, response.text
    after = platform.env_of("crashy")
    assert after["pid"] != before["pid"]
    assert after["K_REVISION"] == before["K_REVISION"]


def test_concurrency_one_serves_one_request_at_a_time(platform: Platform) -> None:
    # One instance allowed, so the other two requests must queue for its only slot.
    platform.ensure_deployed("serial", STREAMING, "--concurrency", "1", "--max-instances", "1")
    assert platform.request("serial", "POST", "/inflight/reset").json()["in_flight"] == 0

    def slow(_: int) -> dict:
        response = platform.request("serial", "GET", "/slow", params={"seconds": 1}, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(slow, range(3)))
    assert platform.request("serial", "GET", "/inflight").json()["max_in_flight"] == 1
    # The queued requests may start more instances (a fork is ready in ~20 ms); each one
    # serves one request at a time.
    for pid in {result["pid"] for result in results}:
        spans = sorted((r["started"], r["finished"]) for r in results if r["pid"] == pid)
        for (_, finished), (started, _) in zip(spans, spans[1:], strict=False):
            assert started >= finished - 0.05, spans


def test_client_disconnect_mid_stream_frees_the_slot(platform: Platform) -> None:
    platform.ensure_deployed("hangup", STREAMING, "--concurrency", "1", "--max-instances", "1")
    platform.env_of("hangup")
    # A stream of 100 events 0.2 s apart holds the only slot for 20 s unless the router notices
    # the client left. Read until the first event, so the request is surely at the instance.
    connection = _raw_get(platform, "hangup", "/sse?events=100&interval=0.2")
    with connection:
        received = b""
        while b"data:" not in received:
            chunk = connection.recv(4096)
            assert chunk, f"connection closed before the first event: {received!r}"
            received += chunk
    started = time.monotonic()
    response = platform.request("hangup", "GET", "/env", timeout=15)
    assert response.status_code == 200
    assert time.monotonic() - started < 5


def test_client_disconnect_before_the_response_frees_the_slot(platform: Platform) -> None:
    platform.ensure_deployed(
        "hangup-early", STREAMING, "--concurrency", "1", "--max-instances", "1"
    )
    platform.env_of("hangup-early")
    connection = _raw_get(platform, "hangup-early", "/slow?seconds=30")
    # Nothing comes back before the app answers, so there is no event to wait on: give the
    # request a moment to reach the instance, then hang up.
    time.sleep(1)
    connection.close()
    started = time.monotonic()
    response = platform.request("hangup-early", "GET", "/env", timeout=20)
    assert response.status_code == 200
    assert time.monotonic() - started < 5
