import random
from collections import Counter

import pytest

from homerun.routing.table import (
    RoutingTable,
    Selection,
    SelectionMemo,
    ServiceRoutes,
    StratifiedRolls,
    TrafficTarget,
    parse_host,
    select,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("hello.localhost:8080", ("hello", None)),
        ("hello.localhost", ("hello", None)),
        ("HELLO.LocalHost:8080", ("hello", None)),
        ("hello.localhost.:8080", ("hello", None)),
        ("blue---hello.localhost:8080", ("hello", "blue")),
        ("localhost:8080", None),
        ("127.0.0.1:8080", None),
        ("a.b.localhost:8080", None),
        ("hello.example.com", None),
        ("---hello.localhost", None),
        ("blue---.localhost", None),
        ("", None),
    ],
)
def test_parse_host(host: str, expected: tuple[str, str | None] | None) -> None:
    assert parse_host(host, "localhost") == expected


def table(*targets: TrafficTarget) -> RoutingTable:
    return RoutingTable("localhost", {"svc": ServiceRoutes("svc", targets)})


def revision_of(selection: Selection | None) -> str | None:
    """The revision selected for a host the table knows."""
    assert selection is not None
    return selection.revision


def test_unknown_service_is_none() -> None:
    assert select(table(TrafficTarget("svc-00001-abc", 100)), "other.localhost", 0.5) is None


def test_service_without_traffic_selects_no_revision() -> None:
    selection = select(table(), "svc.localhost:8080", 0.5)
    assert selection is not None
    assert selection.service == "svc" and selection.revision is None


def test_split_follows_the_roll() -> None:
    routes = table(TrafficTarget("r1", 90), TrafficTarget("r2", 10))
    assert revision_of(select(routes, "svc.localhost", 0.0)) == "r1"
    assert revision_of(select(routes, "svc.localhost", 0.8999)) == "r1"
    assert revision_of(select(routes, "svc.localhost", 0.9)) == "r2"
    assert revision_of(select(routes, "svc.localhost", 0.9999)) == "r2"


def test_zero_percent_target_never_selected_but_reachable_by_tag() -> None:
    routes = table(TrafficTarget("r1", 100), TrafficTarget("r2", 0, tag="canary"))
    for roll in (0.0, 0.5, 0.99999):
        assert revision_of(select(routes, "svc.localhost", roll)) == "r1"
    tagged = select(routes, "canary---svc.localhost:8080", 0.0)
    assert tagged is not None and tagged.revision == "r2" and tagged.tag == "canary"
    assert select(routes, "nope---svc.localhost:8080", 0.0) is None


def test_split_shares_match_percentages() -> None:
    routes = table(TrafficTarget("r1", 30), TrafficTarget("r2", 70))
    counts = Counter(
        revision_of(select(routes, "svc.localhost", step / 1000)) for step in range(1000)
    )
    assert counts == {"r1": 300, "r2": 700}


def test_stratified_rolls_follow_the_split_in_every_hundred() -> None:
    routes = table(TrafficTarget("r1", 37), TrafficTarget("r2", 63))
    rolls = StratifiedRolls(random.Random(7))
    for _ in range(5):
        hundred = Counter(revision_of(select(routes, "svc.localhost", rolls)) for _ in range(100))
        assert hundred == {"r1": 37, "r2": 63}


def test_rolls_are_asked_only_for_a_split() -> None:
    routes = table(TrafficTarget("r1", 100, "t"))

    def roll(service: str) -> float:
        raise AssertionError("a tag or an unknown host needs no roll")

    assert revision_of(select(routes, "t---svc.localhost", roll)) == "r1"
    assert select(routes, "other.localhost", roll) is None


def test_a_service_with_one_serving_revision_needs_no_roll() -> None:
    routes = table(TrafficTarget("r1", 100), TrafficTarget("r2", 0, tag="canary"))

    def roll(service: str) -> float:
        raise AssertionError("one revision serves: nothing to roll")

    selection = select(routes, "svc.localhost", roll)
    assert selection is not None and selection.revision == "r1" and selection.fixed
    split = select(table(TrafficTarget("r1", 50), TrafficTarget("r2", 50)), "svc.localhost", 0.7)
    assert split is not None and split.revision == "r2" and not split.fixed


def test_the_memo_keeps_fixed_selections_per_table_and_rolls_splits_every_time() -> None:
    memo = SelectionMemo(limit=2)
    rolls = iter([0.1, 0.9, 0.1])
    routes = RoutingTable(
        "localhost",
        {
            "svc": ServiceRoutes("svc", (TrafficTarget("r1", 100, "blue"),)),
            "split": ServiceRoutes("split", (TrafficTarget("a", 50), TrafficTarget("b", 50))),
        },
    )
    first = memo.select(routes, "svc.localhost:8080", 0.0)
    assert first is not None and memo.select(routes, "svc.localhost:8080", 0.0) is first
    assert [
        revision_of(memo.select(routes, "split.localhost", lambda _: next(rolls))) for _ in range(3)
    ] == ["a", "b", "a"]
    assert memo.select(routes, "nope.localhost", 0.0) is None

    # Traffic moved: a new snapshot, and the old selection is not reused.
    moved = RoutingTable("localhost", {"svc": ServiceRoutes("svc", (TrafficTarget("r2", 100),))})
    assert revision_of(memo.select(moved, "svc.localhost:8080", 0.0)) == "r2"
    assert memo.select(moved, "blue---svc.localhost", 0.0) is None

    # Past the limit a host is still selected, just not remembered.
    for port in range(8081, 8090):
        assert revision_of(memo.select(moved, f"svc.localhost:{port}", 0.0)) == "r2"


def test_a_mapped_domain_selects_its_service_as_its_own_host_does() -> None:
    table = RoutingTable(
        "localhost",
        {
            "svc": ServiceRoutes(
                "svc", (TrafficTarget("svc-1", 100), TrafficTarget("svc-2", 0, "b"))
            )
        },
        {"app.example.com": "svc"},
    )
    for host in ("app.example.com", "App.Example.COM:443", "app.example.com."):
        assert select(table, host, 0.5) == Selection("svc", "svc-1"), host
    assert select(table, "b---app.example.com", 0.5) is None  # tags stay on svc's own host
    assert select(table, "www.example.com", 0.5) is None
    assert select(table, "app.example.com:99999", 0.5) is None
