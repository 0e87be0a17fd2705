"""The router's HTTPS port: HTTP/2 and HTTP/1.1 by ALPN with a certificate made by trustme (a
test CA), a self-signed certificate for this machine's names when none is given, and a
certificate replaced on disk used by the next handshake without a restart."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import httpx
import pytest
import trustme
from fakes import free_port

from homerun.access.certificates import (
    CertificateFiles,
    CertificateFolder,
    LocalAuthority,
    Reloader,
    SniIssuer,
    https_context,
    local_names,
    server_context,
)
from homerun.errors import HomerunError

from .test_proxy import Address, Proxy, Run, run

__all__ = ["run"]  # a fixture, used by name

NOW = datetime.datetime.now(datetime.UTC)  # real time: clients check validity against it


def issued(ca: trustme.CA, directory: Path, *names: str) -> CertificateFiles:
    certificate = ca.issue_cert(*names)
    files = CertificateFiles(directory / "server.crt", directory / "server.key")
    certificate.cert_chain_pems[0].write_to_path(str(files.cert))
    for more in certificate.cert_chain_pems[1:]:
        more.write_to_path(str(files.cert), append=True)
    certificate.private_key_pem.write_to_path(str(files.key))
    return files


def test_https_speaks_h2_and_http11_by_alpn(run: Run, instance: Address, tmp_path: Path) -> None:
    ca = trustme.CA()
    files = issued(ca, tmp_path, "svc.test")
    context = server_context(files, "config.yaml")
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            await proxy.router.start_tls("127.0.0.1", free_port(), context)
            port = proxy.router.tls_port
            for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
                async with httpx.AsyncClient(
                    verify=trusted, http2=http2, timeout=10, trust_env=False
                ) as client:
                    # svc.test does not resolve: connect to 127.0.0.1, name svc.test for SNI
                    # and the certificate check (httpx's sni_hostname extension).
                    request = client.build_request(
                        "GET",
                        f"https://127.0.0.1:{port}/headers",
                        headers={"host": f"svc.test:{port}"},
                        extensions={"sni_hostname": "svc.test"},
                    )
                    response = await client.send(request)
                    assert response.http_version == version
                    seen = dict(response.json()["headers"])
                    assert seen["x-forwarded-proto"] == "https"
                    assert seen["forwarded"] == f'for=127.0.0.1;proto=https;host="svc.test:{port}"'

    run(scenario)


def test_a_replaced_certificate_is_used_without_a_restart(
    run: Run, instance: Address, tmp_path: Path
) -> None:
    old_ca, new_ca = trustme.CA(), trustme.CA()
    files = issued(old_ca, tmp_path, "svc.test")
    context = server_context(files, "config.yaml")
    reloader = Reloader(context, files, "config.yaml")
    assert reloader.check() is None  # nothing changed

    async def fetch(port: int, ca: trustme.CA) -> int:
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        async with httpx.AsyncClient(verify=trusted, timeout=10, trust_env=False) as client:
            request = client.build_request(
                "GET",
                f"https://127.0.0.1:{port}/hello",
                headers={"host": "svc.test"},
                extensions={"sni_hostname": "svc.test"},
            )
            return (await client.send(request)).status_code

    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            await proxy.router.start_tls("127.0.0.1", free_port(), context)
            port = proxy.router.tls_port
            assert port is not None
            assert await fetch(port, old_ca) == 200
            issued(new_ca, tmp_path, "svc.test")  # certbot renewed it, say
            message = reloader.check()
            assert message is not None and "reloaded" in message
            assert await fetch(port, new_ca) == 200
            with pytest.raises(httpx.ConnectError):
                await fetch(port, old_ca)
            # A broken pair does not replace the one in use.
            files.key.write_text("not a key")
            message = reloader.check()
            assert message is not None and "old certificate stays" in message
            assert await fetch(port, new_ca) == 200

    run(scenario)


def test_the_local_authority_issues_a_certificate_per_service_name(
    run: Run, instance: Address, tmp_path: Path
) -> None:
    clock = Clock()
    assert local_names("example.com") == [
        "localhost", "127.0.0.1", "::1", "example.com", "*.example.com",
    ]  # fmt: skip
    names = local_names("localhost")
    authority = LocalAuthority(tmp_path, clock)
    assert authority.files.key.stat().st_mode & 0o777 == 0o600
    default = authority.issue(names, "default")
    made = default.cert.read_bytes()
    # Kept while it covers the same names and has more than 30 days left; made anew otherwise.
    clock.now += datetime.timedelta(days=300)
    assert authority.issue(names, "default").cert.read_bytes() == made
    clock.now += datetime.timedelta(days=40)
    assert authority.issue(names, "default").cert.read_bytes() != made
    # The authority itself is kept across starts (users trusted it once).
    assert LocalAuthority(tmp_path, clock).certificate == authority.certificate

    clock.now = NOW  # what a client checks against
    routed = {"svc.localhost"}
    context = server_context(authority.issue(names, "default"), "config.yaml")
    context.sni_callback = SniIssuer(authority, routed.__contains__)
    trusted = ssl.create_default_context(cafile=str(authority.files.cert))

    async def get(port: int, name: str) -> httpx.Response:
        return await https_get(port, name, trusted)

    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            await proxy.router.start_tls("127.0.0.1", free_port(), context)
            port = proxy.router.tls_port
            assert port is not None
            for name in ("svc.localhost", "localhost", "127.0.0.1"):
                response = await get(port, name)
                assert response.status_code == 200 and response.http_version == "HTTP/2"
            # A name the router does not route gets the default certificate, which does not
            # name it: nothing is issued for names a client makes up.
            with pytest.raises(httpx.ConnectError, match="not valid for 'made-up.localhost'"):
                await get(port, "made-up.localhost")
            assert sorted(path.name for path in (tmp_path / "issued").iterdir()) == [
                "default.crt", "default.key", "svc.localhost.crt", "svc.localhost.key",
            ]  # fmt: skip

    run(scenario)


def test_certificate_errors_name_the_setting(tmp_path: Path) -> None:
    missing = CertificateFiles(tmp_path / "none.crt", tmp_path / "none.key")
    with pytest.raises(
        HomerunError, match=r"config.yaml: tls-cert-file: .*none.crt does not exist"
    ):
        server_context(missing, "config.yaml: tls-cert-file")
    authority = LocalAuthority(tmp_path, Clock())
    one = authority.issue(["localhost"], "one")
    other = authority.issue(["localhost"], "other")
    mismatched = CertificateFiles(one.cert, other.key)
    with pytest.raises(HomerunError, match="the PEM private key that belongs to it"):
        server_context(mismatched, "config.yaml")


async def https_get(port: int, name: str, trusted: ssl.SSLContext) -> httpx.Response:
    """GET /hello over HTTPS (HTTP/2 offered) to the router on `port`, asking for `name` by
    SNI, with Host svc.test."""
    async with httpx.AsyncClient(verify=trusted, http2=True, timeout=10, trust_env=False) as client:
        request = client.build_request(
            "GET",
            f"https://127.0.0.1:{port}/hello",
            headers={"host": "svc.test"},
            extensions={"sni_hostname": name},
        )
        return await client.send(request)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now


def test_several_domains_by_sni_from_a_certificate_folder(
    run: Run, instance: Address, tmp_path: Path
) -> None:
    ca = trustme.CA()
    folder = tmp_path / "certificates"
    folder.mkdir()
    issued(ca, folder, "a.test").cert.rename(folder / "a.crt")
    (folder / "server.key").rename(folder / "a.key")
    issued(ca, folder, "*.b.test").cert.rename(folder / "b.crt")
    (folder / "server.key").rename(folder / "b.key")
    default = issued(ca, tmp_path, "svc.test")
    certificates = CertificateFolder(folder, "config.yaml: tls-certificates-dir")
    context = https_context(default, "localhost", certificates, lambda name: False, "config.yaml")
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    async def get(port: int, name: str) -> int:
        return (await https_get(port, name, trusted)).status_code

    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            await proxy.router.start_tls("127.0.0.1", free_port(), context)
            port = proxy.router.tls_port
            assert port is not None
            # Each name gets the certificate that covers it; any other the default one.
            for name in ("a.test", "x.b.test", "svc.test"):
                assert await get(port, name) == 200
            for uncovered in ("c.test", "x.y.b.test"):
                with pytest.raises(httpx.ConnectError, match="not valid for"):
                    await get(port, uncovered)
            # A certificate added to the folder is served after the next check.
            issued(ca, folder, "c.test").cert.rename(folder / "c.crt")
            (folder / "server.key").rename(folder / "c.key")
            message = certificates.check()
            assert message is not None and "reloaded" in message
            assert await get(port, "c.test") == 200
            # A broken pair is reported; what was loaded stays.
            (folder / "d.crt").write_text("not a certificate")
            message = certificates.check()
            assert message is not None and "stay in use" in message and "d.key" in message
            assert await get(port, "c.test") == 200

    run(scenario)


def test_a_certificate_folder_with_a_problem_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(HomerunError, match="is not a folder"):
        CertificateFolder(tmp_path / "missing", "config.yaml: tls-certificates-dir")
    (tmp_path / "lonely.crt").write_text("x")
    with pytest.raises(HomerunError, match=r"lonely.key does not exist"):
        CertificateFolder(tmp_path, "config.yaml: tls-certificates-dir")
