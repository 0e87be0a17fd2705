"""routing/hosts.py: the hosts file of every service and tag host."""

from __future__ import annotations

from homerun.routing.hosts import hosts_text, router_address, service_hosts
from homerun.routing.table import RoutingTable, ServiceRoutes, TrafficTarget


def test_every_service_and_tag_host() -> None:
    table = RoutingTable(
        "localhost",
        {
            "web": ServiceRoutes(
                "web",
                (
                    TrafficTarget("web-00001-aaa", 90, None),
                    TrafficTarget("web-00002-bbb", 10, "canary"),
                    TrafficTarget("web-00002-bbb", 0, "canary"),
                ),
            ),
            "api": ServiceRoutes("api"),
        },
    )
    assert service_hosts(table) == ["api.localhost", "web.localhost", "canary---web.localhost"]


def test_the_router_is_reached_at_loopback_when_it_listens_everywhere() -> None:
    assert router_address("0.0.0.0") == "127.0.0.1"
    assert router_address("::") == "::1"
    assert router_address("192.0.2.7") == "192.0.2.7"


def test_hosts_text_is_etc_hosts() -> None:
    names = [f"s{index}.example.com" for index in range(10)]
    text = hosts_text(names, "192.0.2.7", "192.0.2.7:8080")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines[:2] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert lines[2] == "192.0.2.7\t" + " ".join(names[:8])
    assert lines[3] == "192.0.2.7\ts8.example.com s9.example.com"
    assert text.endswith("\n")
