"""Domain mappings through the control plane: a mapped domain routes as its service's host."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from homerun.errors import InvalidSpec, NotFound
from homerun.routing.types import Route, RouteError

from .conftest import Plane


def test_a_mapped_domain_routes_to_its_service_until_the_mapping_is_deleted(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        done = await plane.deployed("hello", source=str(plane.source))
        mappings = plane.control.domain_mappings
        live = plane.control.live
        assert isinstance(live.resolve("app.example.com"), RouteError)

        view = mappings.create("App.Example.com.", "hello")

        assert (view.domain, view.service, view.ready, view.reason) == (
            "app.example.com", "hello", True, "",
        )  # fmt: skip
        assert view.url == "http://app.example.com:8080"
        for host in ("app.example.com", "APP.example.com:8080", "app.example.com.:443"):
            route = live.resolve(host)
            assert isinstance(route, Route) and route.revision == done.revision, host
        assert isinstance(live.resolve("www.example.com"), RouteError)
        assert "app.example.com" in live.hosts_file.read_text()
        assert [m.domain for m in mappings.list()] == ["app.example.com"]
        assert mappings.list("other") == []

        mappings.delete("app.example.com")
        unrouted = live.resolve("app.example.com")
        assert isinstance(unrouted, RouteError) and unrouted.status == 404
        with pytest.raises(NotFound, match="domain-mappings list"):
            mappings.describe("app.example.com")
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_a_domain_mapped_elsewhere_moves_only_with_force_override(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("one", source=str(plane.source))
        two = await plane.deployed("two", source=str(plane.source))
        mappings = plane.control.domain_mappings
        mappings.create("app.example.com", "one")
        assert mappings.create("app.example.com", "one").service == "one"  # again: no change

        with pytest.raises(InvalidSpec, match="already mapped to service one.*--force-override"):
            mappings.create("app.example.com", "two")
        moved = mappings.create("app.example.com", "two", force_override=True)

        assert moved.service == "two"
        route = plane.control.live.resolve("app.example.com")
        assert isinstance(route, Route) and route.revision == two.revision
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_bad_mappings_are_refused_saying_why(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("hello", source=str(plane.source))
        mappings = plane.control.domain_mappings
        with pytest.raises(NotFound, match="service 'helo' not found.*hello"):
            mappings.create("app.example.com", "helo")
        for domain, reason in [
            ("hello.localhost", "homerun's own service URLs"),
            ("localhost", "homerun's own service URLs"),
            ("*.example.com", "wildcards are not mapped"),
            ("127.0.0.1", "an IP address is not a domain"),
            ("example", "two or more labels"),
            ("-bad.example.com", "not starting or ending with a hyphen"),
            ("a_b.example.com", "letters, digits and hyphens"),
            ("", "required"),
        ]:
            with pytest.raises(InvalidSpec, match=reason):
                mappings.create(domain, "hello")
        assert mappings.list() == []
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_a_mapping_outlives_its_service_and_says_it_is_not_ready(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("hello", source=str(plane.source))
        mappings = plane.control.domain_mappings
        mappings.create("app.example.com", "hello")

        await plane.control.revisions.delete_service("hello")
        await asyncio.wait_for(plane.runtime.started[-1].wait(), 5)  # its instance stopped

        view = mappings.describe("app.example.com")
        assert not view.ready
        assert view.reason == "service hello does not exist (it was deleted)"
        assert isinstance(plane.control.live.resolve("app.example.com"), RouteError)
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_describe_names_the_certificate_a_handshake_gets(
    make_plane: Callable[..., Plane], tmp_path: Path
) -> None:
    folder = tmp_path / "certs"
    folder.mkdir()
    authority = trustme.CA()
    issued = authority.issue_cert("*.example.com")
    issued.cert_chain_pems[0].write_to_path(str(folder / "example.crt"))
    issued.private_key_pem.write_to_path(str(folder / "example.key"))

    async def scenario(plane: Plane) -> None:
        await plane.deployed("hello", source=str(plane.source))
        mappings = plane.control.domain_mappings

        covered = mappings.create("app.example.com", "hello")
        other = mappings.create("app.example.org", "hello")

        assert covered.https_url == "https://app.example.com:8443"
        assert covered.certificate == f"{folder / 'example.crt'} (tls-certificates-dir)"
        assert other.certificate.startswith("issued for app.example.org by homerun's local")
        await plane.control.close()

    asyncio.run(scenario(make_plane(https_port=8443, tls_certificates_dir=str(folder))))


def test_without_https_describe_says_how_to_get_it(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("hello", source=str(plane.source))
        view = plane.control.domain_mappings.create("app.example.com", "hello")
        assert view.https_url is None
        assert view.certificate == "none: no HTTPS listener (set https-port in config.yaml)"
        assert "curl --resolve app.example.com:8080:127.0.0.1" in view.reach
        await plane.control.close()

    asyncio.run(scenario(make_plane()))
