"""gcloud's update-traffic semantics, the flags' parsing, and the rules a split keeps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homerun.errors import HomerunError, InvalidSpec
from homerun.traffic import (
    DEFAULT_TRAFFIC,
    LATEST,
    TrafficEntry,
    TrafficUpdate,
    assign_percentages,
    check_tag,
    parse_assignments,
    parse_percentages,
    parse_tag_list,
    pin_latest,
    resolve,
    retag,
    served_percent,
    tags_of,
    traffic_problems,
    update_traffic,
)

READY = {"svc-a": "ready", "svc-b": "ready", "svc-c": "ready", "svc-x": "failed"}


def split(**percent: int) -> tuple[TrafficEntry, ...]:
    return tuple(
        TrafficEntry(p, latest=True) if key == "LATEST" else TrafficEntry(p, f"svc-{key}")
        for key, p in percent.items()
    )


def shares(entries: tuple[TrafficEntry, ...]) -> dict[str, int]:
    found: dict[str, int] = {}
    for entry in entries:
        if entry.percent:
            found[entry.key] = found.get(entry.key, 0) + entry.percent
    return found


def update(entries: tuple[TrafficEntry, ...], **flags: object) -> tuple[TrafficEntry, ...]:
    return update_traffic(
        entries, TrafficUpdate.model_validate(flags), service="svc", revisions=READY
    )


# -- parsing ----------------------------------------------------------------------------------


def test_percentages_parse_like_gcloud() -> None:
    assert parse_percentages("svc-a=10,LATEST=90", "--to-revisions") == {"svc-a": 10, LATEST: 90}
    assert parse_assignments("green=svc-a, blue=LATEST", "--set-tags") == {
        "green": "svc-a",
        "blue": LATEST,
    }
    assert parse_tag_list("a,b,", "--remove-tags") == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("svc-a", "is not NAME=VALUE"),
        ("svc-a=", "is not NAME=VALUE"),
        ("svc-a=ten", "whole 0..100"),
        ("svc-a=-1", "whole 0..100"),
        ("svc-a=101", "whole 0..100"),
        ("svc-a=50,svc-a=50", "given twice"),
    ],
)
def test_bad_percentages_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_percentages(text, "--to-revisions")


@pytest.mark.parametrize("tag", ["green", "v2", "a-b"])
def test_good_tags(tag: str) -> None:
    assert check_tag(tag, "svc") == tag


@pytest.mark.parametrize("tag", ["Green", "2v", "a_b", "a---b", "-a", "a-", ""])
def test_bad_tags(tag: str) -> None:
    with pytest.raises(InvalidSpec, match="invalid tag"):
        check_tag(tag, "svc")


def test_a_tag_must_fit_the_host_label() -> None:
    with pytest.raises(InvalidSpec, match="63-character DNS label"):
        check_tag("t" * 40, "s" * 21)
    assert check_tag("t" * 40, "s" * 20)


# -- update-traffic ---------------------------------------------------------------------------


def test_explicit_split_replaces_the_traffic() -> None:
    result = update(DEFAULT_TRAFFIC, to_revisions={"svc-a": 10, "svc-b": 90})
    assert shares(result) == {"svc-a": 10, "svc-b": 90}


def test_under_100_scales_the_others_as_gcloud_documents() -> None:
    # "revision-1 is serving 40 percent and revision-2 60; revision-1 is assigned 45 ... and
    # revision-2 scaled down to 55 percent."
    assert shares(update(split(a=40, b=60), to_revisions={"svc-a": 45})) == {
        "svc-a": 45,
        "svc-b": 55,
    }
    # Two others share the rest in proportion: 40 % as 30:50 is 15 and 25.
    assert shares(update(split(a=20, b=30, c=50), to_revisions={"svc-a": 60})) == {
        "svc-a": 60,
        "svc-b": 15,
        "svc-c": 25,
    }


def test_rounding_keeps_the_total_at_100() -> None:
    result = update(split(a=33, b=33, c=34), to_revisions={"svc-a": 1})
    assert sum(shares(result).values()) == 100
    assert shares(result)["svc-a"] == 1


def test_latest_and_to_latest() -> None:
    pinned = split(a=100)
    assert shares(update(pinned, to_latest=True)) == {LATEST: 100}
    assert shares(update(pinned, to_revisions={LATEST: 10})) == {LATEST: 10, "svc-a": 90}


def test_zero_removes_a_target() -> None:
    result = update(split(a=50, b=50), to_revisions={"svc-a": 0})
    assert result == (TrafficEntry(100, "svc-b"),)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"to_revisions": {"svc-a": 60, "svc-b": 50}}, "110%, more than 100%"),
        ({"to_revisions": {"svc-a": 90}}, "no other revision serves traffic"),
        ({"to_revisions": {"svc-nope": 100}}, "'svc-nope' is not a revision of svc"),
        ({"to_revisions": {"svc-x": 100}}, "svc-x is failed, not ready"),
        ({"to_tags": {"blue": 100}}, "no revision of svc is tagged 'blue'"),
        ({"update_tags": {"Blue": "svc-a"}}, "invalid tag"),
        ({"update_tags": {"blue": "svc-x"}}, "svc-x is failed"),
        ({"remove_tags": ["blue"]}, "has no tag 'blue'"),
        ({}, "nothing to change"),
    ],
)
def test_bad_updates_are_refused_whole(flags: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        update(split(a=100), **flags)


def test_tags_move_to_zero_percent_targets_and_route_percent_by_tag() -> None:
    tagged = update(split(a=100), update_tags={"green": "svc-b"})
    assert tagged == (TrafficEntry(100, "svc-a"), TrafficEntry(0, "svc-b", tag="green"))
    moved = update(tagged, to_tags={"green": 30})
    assert shares(moved) == {"svc-a": 70, "svc-b": 30}
    assert [entry.tag for entry in moved if entry.tag] == ["green"]
    # A tag changes revision: it leaves the old one.
    retagged = update(moved, update_tags={"green": "svc-c"})
    assert [(entry.key, entry.tag) for entry in retagged if entry.tag] == [("svc-c", "green")]


def test_set_clear_and_remove_tags() -> None:
    tagged = update(split(a=100), update_tags={"one": "svc-a", "two": "svc-b"})
    assert {e.tag for e in update(tagged, set_tags={"three": "svc-c"}) if e.tag} == {"three"}
    assert {e.tag for e in update(tagged, remove_tags=["one"]) if e.tag} == {"two"}
    cleared = update(tagged, clear_tags=True)
    assert cleared == (TrafficEntry(100, "svc-a"),)


def test_no_traffic_pins_latest_to_the_revision_serving_now() -> None:
    assert pin_latest(DEFAULT_TRAFFIC, "svc-a") == (TrafficEntry(100, "svc-a"),)
    mixed = split(a=50, LATEST=50)
    assert shares(pin_latest(mixed, "svc-b")) == {"svc-a": 50, "svc-b": 50}
    already_pinned = split(a=100)
    assert pin_latest(already_pinned, "svc-b") == already_pinned


def test_deploy_tag_goes_to_the_new_revision() -> None:
    before = (TrafficEntry(100, latest=True), TrafficEntry(0, "svc-a", tag="green"))
    after = retag(before, {"green": "svc-b"})
    assert after == (TrafficEntry(100, latest=True), TrafficEntry(0, "svc-b", tag="green"))


def test_resolve_and_what_a_revision_serves() -> None:
    entries = (
        TrafficEntry(60, latest=True),
        TrafficEntry(40, "svc-a"),
        TrafficEntry(0, "svc-a", tag="old"),
    )
    resolved = resolve(entries, "svc-b")
    assert served_percent(resolved, "svc-b") == 60
    assert served_percent(resolved, "svc-a") == 40
    assert tags_of(resolved, "svc-a") == ["old"]
    assert resolve(entries, None)[0].revision is None


def test_knative_rules_of_a_traffic_block() -> None:
    assert traffic_problems(split(a=50, b=50)) == []
    assert traffic_problems(split(a=50, b=40)) == [("", "traffic targets sum to 90, want 100")]
    duplicated = (TrafficEntry(100, "svc-a", tag="t"), TrafficEntry(0, "svc-b", tag="t"))
    assert traffic_problems(duplicated)[0][0] == "[1].tag"


# -- properties -------------------------------------------------------------------------------

revision_keys = st.sampled_from(["svc-a", "svc-b", "svc-c", LATEST])


@st.composite
def current_splits(draw: st.DrawFn) -> tuple[TrafficEntry, ...]:
    keys = draw(st.lists(revision_keys, min_size=1, max_size=4, unique=True))
    count = len(keys) - 1
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count, max_size=count)))
    bounds = [0, *cuts, 100]
    return (
        tuple(
            TrafficEntry(bounds[i + 1] - bounds[i], latest=True)
            if key == LATEST
            else TrafficEntry(bounds[i + 1] - bounds[i], key)
            for i, key in enumerate(keys)
            if bounds[i + 1] > bounds[i]
        )
        or DEFAULT_TRAFFIC
    )


@given(
    current_splits(),
    st.dictionaries(revision_keys, st.integers(0, 100), min_size=1, max_size=3),
)
def test_any_accepted_update_sums_to_100_and_sets_what_was_asked(
    current: tuple[TrafficEntry, ...], asked: dict[str, int]
) -> None:
    try:
        result = assign_percentages(current, asked)
    except InvalidSpec:
        total = sum(asked.values())
        others = set(shares(current)) - set(asked)
        assert total > 100 or (total < 100 and not others)
        return
    assert sum(entry.percent for entry in result) == 100
    assert all(entry.percent > 0 for entry in result)
    got = shares(result)
    for key, percent in asked.items():
        assert got.get(key, 0) == percent
    assert set(got) <= set(asked) | set(shares(current))


# -- any input: a value or InvalidSpec, never another exception (hypothesis) ---------------

flag_text = st.text(alphabet=st.sampled_from("abz09-=,LATEST%+ "), max_size=30) | st.text(
    max_size=30
)


@given(flag_text)
def test_any_traffic_flag_parses_or_is_refused(text: str) -> None:
    for parse in (parse_percentages, parse_assignments, parse_tag_list):
        try:
            parse(text, "--flag")
        except InvalidSpec:
            pass
    try:
        check_tag(text, "svc")
    except InvalidSpec:
        pass


names = st.sampled_from(["svc-00001-abc", "svc-00002-def", "LATEST", "gone", "", "a=b"])
tags = st.sampled_from(["blue", "green", "Bad", "a---b", "", "x" * 70])
percents = st.integers(min_value=-5, max_value=150)


VALID_SPLITS = [
    DEFAULT_TRAFFIC,
    (TrafficEntry(percent=100, revision="svc-00001-abc"),),
    (
        TrafficEntry(percent=60, revision="svc-00001-abc", tag="blue"),
        TrafficEntry(percent=40, latest=True),
    ),
    (
        TrafficEntry(percent=100, latest=True),
        TrafficEntry(percent=0, revision="svc-00001-abc", tag="green"),
    ),
]


@given(
    st.sampled_from(VALID_SPLITS),
    st.builds(
        TrafficUpdate,
        to_revisions=st.dictionaries(names, percents, max_size=3),
        to_latest=st.booleans(),
        to_tags=st.dictionaries(tags, percents, max_size=2),
        set_tags=st.none() | st.dictionaries(tags, names, max_size=2),
        update_tags=st.dictionaries(tags, names, max_size=2),
        remove_tags=st.lists(tags, max_size=2),
        clear_tags=st.booleans(),
    ),
)
def test_any_update_gives_a_valid_split_or_an_error(
    entries: tuple[TrafficEntry, ...], update: TrafficUpdate
) -> None:
    """From a valid split, any flags give a valid split or an error that changes nothing."""
    revisions = {"svc-00001-abc": "ready", "svc-00002-def": "failed"}
    try:
        edited = update_traffic(entries, update, service="svc", revisions=revisions)
    except HomerunError:
        return
    assert traffic_problems(edited) == [], (update, entries, edited)
