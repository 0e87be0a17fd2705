"""HTTP/2 and gRPC end to end: a grpcio service deployed with --use-http2 and called through
the router by a grpcio client (unary and streaming calls, status and trailers), and an HTTP/2
client (httpx, h2c with prior knowledge) of an HTTP/1.1 app."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
import yaml
from fakes import free_port

from .harness import APPS, HOMERUN, Platform, describe, running_platform

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


def test_grpc_health_probes_gate_a_grpc_service(platform: Platform) -> None:
    """A `grpc` startup probe (grpc.health.v1 over h2c) passes on SERVING; one that asks about a
    service the server does not know fails the deploy saying so, and the first keeps serving."""
    probe = "grpc.port=8080,periodSeconds=1,failureThreshold=20"
    deployed = platform.deploy(
        "grpc-probed", APPS / "grpc_echo", "--use-http2", "--startup-probe", probe,
        "--liveness-probe", "grpc.port=8080,periodSeconds=5",
    )  # fmt: skip
    assert deployed.returncode == 0, describe(deployed)
    result = platform.run("services", "describe", "grpc-probed", "--format", "yaml")
    container = yaml.safe_load(result.stdout)["spec"]["template"]["spec"]["containers"][0]
    assert container["startupProbe"]["grpc"] == {"port": 8080}
    assert container["livenessProbe"]["grpc"] == {"port": 8080}

    unknown = "grpc.service=no.such.Service,periodSeconds=1,failureThreshold=2"
    failed = platform.deploy(
        "grpc-probed", APPS / "grpc_echo", "--use-http2", "--startup-probe", unknown
    )
    assert failed.returncode == 1, describe(failed)
    # grpcio's health service answers an unknown service with grpc-status 5 (NOT_FOUND).
    expected = "gRPC health check of service 'no.such.Service' (the health check failed with"
    assert expected in failed.stderr, describe(failed)
    assert "grpc-probed-00001" in failed.stderr and "keeps serving" in failed.stderr
    options = [("grpc.default_authority", platform.host("grpc-probed")),
               ("grpc.enable_http_proxy", 0)]  # fmt: skip
    with grpc.insecure_channel(f"127.0.0.1:{platform.port}", options=options) as channel:
        assert channel.unary_unary("/test.Echo/Unary")(b"ok", timeout=30) == b"echo:ok:127.0.0.1"


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


def test_https_with_a_certificate_made_by_trustme(tmp_path: Path, venv_cache: Path) -> None:
    """config.yaml's https-port with tls-cert-file and tls-key-file: HTTP/2 and HTTP/1.1 by ALPN
    to a deployed app, with the original Host and X-Forwarded-Proto https."""
    ca = trustme.CA()
    issued = ca.issue_cert("whoami.localhost")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    https_port = free_port()
    config = {
        "stop-grace-seconds": 3,
        "https-port": https_port,
        "tls-cert-file": str(cert),
        "tls-key-file": str(key),
    }
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    with running_platform(tmp_path / "home", venv_cache, config) as platform:
        platform.deploy_ok("whoami", APPS / "whoami")
        for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
            with httpx.Client(verify=trusted, http2=http2, timeout=60, trust_env=False) as client:
                request = client.build_request(
                    "GET",
                    f"https://127.0.0.1:{https_port}/",
                    headers={"Host": f"whoami.localhost:{https_port}"},
                    extensions={"sni_hostname": "whoami.localhost"},
                )
                response = client.send(request)
                assert response.status_code == 200, response.text
                assert response.http_version == version
        assert f"https://127.0.0.1:{https_port}" in platform.log_path.read_text()


def test_https_without_certificate_files_uses_the_local_authority(
    tmp_path: Path, venv_cache: Path
) -> None:
    https_port = free_port()
    config = {"stop-grace-seconds": 3, "https-port": https_port}
    with running_platform(tmp_path / "home", venv_cache, config) as platform:
        platform.deploy_ok("whoami", APPS / "whoami")
        authority = platform.home / "tls" / "ca.crt"
        assert f"trust {authority}" in platform.log_path.read_text()
        trusted = ssl.create_default_context(cafile=str(authority))
        with httpx.Client(verify=trusted, http2=True, timeout=60, trust_env=False) as client:
            request = client.build_request(
                "GET",
                f"https://127.0.0.1:{https_port}/",
                headers={"Host": f"whoami.localhost:{https_port}"},
                extensions={"sni_hostname": "whoami.localhost"},  # issued for it at first use
            )
            response = client.send(request)
            assert response.status_code == 200 and response.http_version == "HTTP/2"


def test_a_missing_certificate_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    missing = tmp_path / "nowhere.crt"
    (home / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "https-port": free_port(),
                "tls-cert-file": str(missing),
                "tls-key-file": str(tmp_path / "nowhere.key"),
            }
        )
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("HOMERUN_")}
    env["HOMERUN_HOME"] = str(home)
    result = subprocess.run(
        [*HOMERUN, "up", "--port", str(free_port())],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "tls-cert-file" in result.stderr and f"{missing} does not exist" in result.stderr
