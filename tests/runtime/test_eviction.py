"""The pure choice of idle zygotes to stop under a memory budget."""

from __future__ import annotations

from homerun.runtime._eviction import IdleZygote, evictions

MiB = 1024 * 1024


def zygote(
    key: int, mib: int, last_used: int, base: int | None = None, *, quick: bool = False
) -> IdleZygote:
    return IdleZygote(key=key, pss=mib * MiB, last_used=last_used, base=base, quick=quick)


def test_nothing_goes_within_the_budget() -> None:
    idle = [zygote(1, 10, 1), zygote(2, 10, 2)]
    assert evictions(idle, 20 * MiB) == []
    assert evictions([], 0) == []


def test_least_recently_used_go_first_until_the_rest_fits() -> None:
    idle = [zygote(1, 10, 5), zygote(2, 10, 1), zygote(3, 10, 3)]
    assert evictions(idle, 15 * MiB) == [2, 3]
    assert evictions(idle, 20 * MiB) == [2]


def test_the_docstrings_example() -> None:
    base, lone, a, b = 10, 11, 1, 2
    idle = [
        zygote(base, 20, 0),
        zygote(lone, 25, 1),
        zygote(a, 10, 2, base, quick=True),
        zygote(b, 10, 3, base, quick=True),
    ]
    assert evictions(idle, 64 * MiB) == [a]
    # Then B; then the zygote on its own, used longer ago than the base (through B).
    assert evictions(idle, 0) == [a, b, lone, base]


def test_zygotes_quick_to_make_again_go_before_any_other() -> None:
    idle = [zygote(1, 10, 1), zygote(2, 10, 9, quick=True), zygote(3, 10, 5, quick=True)]
    assert evictions(idle, 15 * MiB) == [3, 2]


def test_a_base_goes_only_after_every_zygote_forked_from_it() -> None:
    """The base was last used long ago, but a zygote forked from it was used since: the base
    counts as used then, and its zygotes go before it."""
    base = 10
    idle = [zygote(base, 20, 1), zygote(1, 5, 9, base), zygote(2, 30, 5)]
    assert evictions(idle, 0) == [2, 1, base]
    assert evictions(idle, 24 * MiB) == [2, 1]
    assert evictions(idle, 25 * MiB) == [2]


def test_a_base_with_a_zygote_of_the_same_age_keeps_it_until_the_zygote_goes() -> None:
    base = 10
    idle = [zygote(base, 20, 4), zygote(1, 5, 4, base)]
    assert evictions(idle, 0) == [1, base]


def test_a_zygote_whose_base_is_not_idle_goes_on_its_own() -> None:
    """Its base serves other revisions' instances, so is not a candidate at all."""
    idle = [zygote(1, 5, 1, base=99), zygote(2, 5, 2)]
    assert evictions(idle, 5 * MiB) == [1]
