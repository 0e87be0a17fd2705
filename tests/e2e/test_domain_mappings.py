"""Domain mappings end to end: `homerun domain-mappings create` routes a domain of the user's to
a service over HTTP, and over HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with the certificate for it
that tls-certificates-dir holds (one made by trustme); the mapping survives a restart."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest
import trustme
import yaml
from fakes import free_port

from .harness import APPS, Platform, describe, running_platform

pytestmark = pytest.mark.e2e

DOMAIN = "app.example.test"


def _get(platform: Platform, host: str) -> httpx.Response:
    with httpx.Client(timeout=60, trust_env=False) as client:
        return client.get(f"http://127.0.0.1:{platform.port}/", headers={"Host": host})


def _https_get(port: int, trusted: ssl.SSLContext, *, http2: bool) -> httpx.Response:
    with httpx.Client(verify=trusted, http2=http2, timeout=60, trust_env=False) as client:
        request = client.build_request(
            "GET",
            f"https://127.0.0.1:{port}/",
            headers={"Host": DOMAIN},
            extensions={"sni_hostname": DOMAIN},
        )
        return client.send(request)


def test_a_domain_mapped_to_a_service_over_http_and_https(tmp_path: Path, venv_cache: Path) -> None:
    ca = trustme.CA()
    certificates = tmp_path / "certificates"
    certificates.mkdir()
    issued = ca.issue_cert(DOMAIN)
    issued.cert_chain_pems[0].write_to_path(str(certificates / "app.crt"))
    issued.private_key_pem.write_to_path(str(certificates / "app.key"))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    https_port = free_port()
    config = {
        "stop-grace-seconds": 3,
        "https-port": https_port,
        "tls-certificates-dir": str(certificates),
    }
    with running_platform(tmp_path / "home", venv_cache, config) as platform:
        platform.deploy_ok("whoami", APPS / "whoami")
        assert _get(platform, DOMAIN).status_code == 404

        created = platform.run(
            "domain-mappings", "create", "--service", "whoami", "--domain", DOMAIN
        )

        assert created.returncode == 0, describe(created)
        assert f"Mapped domain [{DOMAIN}] to service [whoami]." in created.stdout
        assert f"{certificates / 'app.crt'} (tls-certificates-dir)" in created.stdout
        answer = _get(platform, f"{DOMAIN}:{platform.port}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["K_SERVICE"] == "whoami"
        for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
            secure = _https_get(https_port, trusted, http2=http2)
            assert (secure.status_code, secure.http_version) == (200, version), secure.text
            assert secure.json()["K_SERVICE"] == "whoami"

        # gcloud's spelling, and the Knative document to apply beside the service
        described = platform.run(
            "run", "domain-mappings", "describe", "--domain", DOMAIN, "--format", "yaml"
        )
        assert described.returncode == 0, describe(described)
        document = yaml.safe_load(described.stdout)
        assert document["kind"] == "DomainMapping"
        assert document["metadata"]["name"] == DOMAIN
        assert document["spec"]["ref"]["name"] == "whoami"

        taken = platform.run("domain-mappings", "create", "--service", "nope", "--domain", DOMAIN)
        assert taken.returncode == 1
        assert "service 'nope' not found" in taken.stderr
        platform.deploy_ok("other", APPS / "whoami")
        moved = platform.run("domain-mappings", "create", "--service", "other", "--domain", DOMAIN)
        assert moved.returncode == 1
        assert "already mapped to service whoami" in moved.stderr
        assert "--force-override" in moved.stderr

        platform.down()
        platform.start()
        after = _get(platform, DOMAIN)
        assert after.status_code == 200 and after.json()["K_SERVICE"] == "whoami"
        listed = platform.run("domain-mappings", "list")
        assert DOMAIN in listed.stdout and "whoami" in listed.stdout, describe(listed)

        deleted = platform.run("domain-mappings", "delete", "--domain", DOMAIN, "--quiet")
        assert deleted.returncode == 0, describe(deleted)
        assert _get(platform, DOMAIN).status_code == 404
        gone = platform.run("domain-mappings", "describe", "--domain", DOMAIN)
        assert gone.returncode == 1 and "not found" in gone.stderr
