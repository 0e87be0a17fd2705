"""HTTP/2 and gRPC end to end: a grpcio service deployed with --use-http2 and called through
the router by a grpcio client (unary and streaming calls, status and trailers), and an HTTP/2
client (httpx, h2c with prior knowledge) of an HTTP/1.1 app."""

from __future__ import annotations

import json
import time

import grpc
import httpx
import pytest
import yaml

from .harness import APPS, Platform, describe

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def grpc_echo(platform: Platform) -> str:
    platform.ensure_deployed("grpc-echo", APPS / "grpc_echo", "--use-http2")
    return "grpc-echo"


def test_a_grpc_service_deployed_with_use_http2(platform: Platform, grpc_echo: str) -> None:
    options = [("grpc.default_authority", platform.host(grpc_echo)), ("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{platform.port}", options=options) as channel:
        answer, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hi", timeout=30)
        assert answer == b"echo:hi:127.0.0.1"
        assert ("x-trailer", "kept") in call.trailing_metadata()
        streamed = channel.unary_stream("/test.Echo/ServerStream")(b"3", timeout=30)
        assert list(streamed) == [b"0", b"1", b"2"]
        gathered = channel.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b"]), timeout=30)
        assert gathered == b"a,b"
        echoed = channel.stream_stream("/test.Echo/Bidi")(iter([b"x", b"y"]), timeout=30)
        assert list(echoed) == [b"X", b"Y"]
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/test.Echo/Fail")(b"it", timeout=30)
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND

    # The Knative document names the port h2c, as Cloud Run's does for --use-http2.
    result = platform.run("services", "describe", grpc_echo, "--format", "yaml")
    assert result.returncode == 0, describe(result)
    container = yaml.safe_load(result.stdout)["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["name"] == "h2c"

    # Request logs carry the call's grpc-status (5: NOT_FOUND) and the protocol.
    def failed_call_logged() -> bool:
        result = platform.run("logs", "read", grpc_echo, "--format", "json", "--limit", "50")
        entries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        return any(
            entry.get("grpcStatus") == 5 and entry["httpRequest"]["protocol"] == "HTTP/2"
            for entry in entries
            if "httpRequest" in entry
        )

    deadline = time.monotonic() + 10
    while not failed_call_logged():
        assert time.monotonic() < deadline, "the failed call's request log did not come"
        time.sleep(0.3)


def test_an_http2_client_of_an_http11_app(platform: Platform, streaming: str) -> None:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{platform.port}",
        headers={"Host": platform.host(streaming)},
        http1=False,
        http2=True,
        timeout=60,
        trust_env=False,
    ) as client:
        response = client.get("/env")
        assert response.http_version == "HTTP/2" and response.status_code == 200
        assert response.json()["K_SERVICE"] == streaming
        assert client.get("/no-such-path").status_code == 404
