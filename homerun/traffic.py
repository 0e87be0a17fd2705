"""Traffic blocks: gcloud's update-traffic edits and the rules they keep, without I/O.

A service's traffic is a list of Knative TrafficTargets: a percent for a revision named
outright or for LATEST (the latest ready revision, whichever that is when a request comes),
and optionally a tag that gives the target its own URL, `TAG---SERVICE.DOMAIN`. The edits
follow gcloud's `run services update-traffic` (googlecloudsdk/api_lib/run/traffic.py): an
assignment below 100 % scales the other serving targets to fill the rest, tags move to their
own 0 % targets, and `--no-traffic` pins LATEST to the revision it names now.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypedDict

from pydantic import BaseModel, ConfigDict, Field

from homerun.errors import InvalidSpec
from homerun.model.states import RevisionStatus
from homerun.model.suggest import did_you_mean

# A tag's URL: TAG---SERVICE.DOMAIN (Cloud Run's form).
TAG_SEPARATOR = "---"
LATEST = "LATEST"  # gcloud's key for the latest ready revision; revision names are lowercase
# Knative checks tags as DNS-1035 labels; '---' separates a tag from the service in a host.
_TAG = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL = 63


class TrafficJson(TypedDict, total=False):
    """A traffic entry as the store keeps it and views show it (TrafficEntry.to_json)."""

    percent: int
    revision: str
    latest: bool
    tag: str


@dataclass(frozen=True)
class TrafficEntry:
    """One line of a service's traffic block (Knative's TrafficTarget)."""

    percent: int
    revision: str | None = None  # None with latest=True: the latest ready revision
    latest: bool = False
    tag: str | None = None

    def to_json(self) -> TrafficJson:
        """The store's and the views' form: the fields set, in this order."""
        entry: TrafficJson = {"percent": self.percent}
        if self.revision is not None:
            entry["revision"] = self.revision
        entry["latest"] = self.latest
        if self.tag is not None:
            entry["tag"] = self.tag
        return entry

    @property
    def key(self) -> str:
        return LATEST if self.latest else str(self.revision)


def entry_for(key: str, percent: int = 0, tag: str | None = None) -> TrafficEntry:
    if key == LATEST:
        return TrafficEntry(percent=percent, latest=True, tag=tag)
    return TrafficEntry(percent=percent, revision=key, tag=tag)


DEFAULT_TRAFFIC = (TrafficEntry(percent=100, latest=True),)


class TrafficUpdate(BaseModel):
    """The flags of `homerun services update-traffic`, as the daemon receives them."""

    model_config = ConfigDict(extra="forbid")

    to_revisions: dict[str, int] = Field(default_factory=dict)
    to_latest: bool = False
    to_tags: dict[str, int] = Field(default_factory=dict)
    set_tags: dict[str, str] | None = None  # every other tag goes
    update_tags: dict[str, str] = Field(default_factory=dict)
    remove_tags: list[str] = Field(default_factory=list)
    clear_tags: bool = False

    @property
    def moves_traffic(self) -> bool:
        return self.to_latest or bool(self.to_revisions) or bool(self.to_tags)

    @property
    def changes_tags(self) -> bool:
        return (
            self.set_tags is not None
            or bool(self.update_tags)
            or bool(self.remove_tags)
            or self.clear_tags
        )


# -- parsing flags ---------------------------------------------------------------------------


def parse_assignments(text: str, flag: str) -> dict[str, str]:
    """`A=x,B=y` as gcloud's dict flags take it; a name given twice is an error."""
    assignments: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise InvalidSpec(f"{flag}: {item!r} is not NAME=VALUE; write {flag} NAME=VALUE,...")
        if name in assignments:
            raise InvalidSpec(f"{flag}: {name} is given twice")
        assignments[name] = value
    return assignments


def parse_percentages(text: str, flag: str) -> dict[str, int]:
    """`rev-a=10,LATEST=90` -> {'rev-a': 10, 'LATEST': 90}."""
    percentages = {}
    for name, value in parse_assignments(text, flag).items():
        if not value.isdigit() or int(value) > 100:
            raise InvalidSpec(f"{flag}: {name}={value}: the percentage must be a whole 0..100")
        percentages[name] = int(value)
    return percentages


def parse_tag_list(text: str, flag: str) -> list[str]:
    tags = [tag.strip() for tag in text.split(",") if tag.strip()]
    if not tags:
        raise InvalidSpec(f"{flag}: give at least one tag")
    return tags


def check_tag(tag: str, service: str, where: str = "tag") -> str:
    if not _TAG.match(tag) or TAG_SEPARATOR in tag:
        raise InvalidSpec(
            f"{where}: invalid tag {tag!r}: use lowercase letters, digits and single hyphens, "
            "starting with a letter (a DNS label such as 'green' or 'v2')"
        )
    host_label = len(tag) + len(TAG_SEPARATOR) + len(service)
    if host_label > MAX_LABEL:
        raise InvalidSpec(
            f"{where}: tag {tag!r} is too long for service {service!r}: "
            f"'{tag}{TAG_SEPARATOR}{service}' must fit a {MAX_LABEL}-character DNS label"
        )
    return tag


# -- edits -----------------------------------------------------------------------------------


def update_traffic(
    entries: Iterable[TrafficEntry],
    update: TrafficUpdate,
    *,
    service: str,
    revisions: Mapping[str, str],
) -> tuple[TrafficEntry, ...]:
    """Apply `homerun services update-traffic` flags; InvalidSpec (and no result) when the
    flags name a revision or tag that does not exist, is not ready, or do not add up."""
    current = tuple(entries) or DEFAULT_TRAFFIC
    if not update.moves_traffic and not update.changes_tags:
        raise InvalidSpec(
            "nothing to change: give --to-revisions, --to-latest or --to-tags, or a tag flag "
            "(--set-tags, --update-tags, --remove-tags, --clear-tags)"
        )
    if update.to_latest:
        percentages = {LATEST: 100}
    elif update.to_tags:
        tagged = {entry.tag: entry.key for entry in current if entry.tag}
        percentages = {}
        for tag, percent in update.to_tags.items():
            if tag not in tagged:
                known = ", ".join(sorted(tag for tag in tagged if tag)) or "none"
                raise InvalidSpec(
                    f"--to-tags: no revision of {service} is tagged {tag!r}"
                    f"{did_you_mean(tag, [t for t in tagged if t])} (tags: {known}); "
                    "tag one first with --update-tags TAG=REVISION"
                )
            percentages[tagged[tag]] = percent
    else:
        percentages = dict(update.to_revisions)
    for key in percentages:
        check_target(key, service, revisions, "--to-revisions")
    if update.set_tags is not None:
        to_tag, clear_others = update.set_tags, True
    else:
        to_tag, clear_others = update.update_tags, update.clear_tags
    for tag, key in to_tag.items():
        check_tag(tag, service, "--set-tags" if update.set_tags is not None else "--update-tags")
        check_target(key, service, revisions, f"tag {tag}")
    existing_tags = {entry.tag for entry in current if entry.tag}
    for tag in update.remove_tags:
        if tag not in existing_tags:
            known = ", ".join(sorted(str(tag) for tag in existing_tags)) or "none"
            hint = did_you_mean(tag, [str(t) for t in existing_tags])
            raise InvalidSpec(f"--remove-tags: {service} has no tag {tag!r}{hint} (tags: {known})")

    edited = assign_percentages(current, percentages) if percentages else current
    if update.changes_tags:
        edited = retag(edited, to_tag, update.remove_tags, clear_others)
    return edited


def check_target(key: str, service: str, revisions: Mapping[str, str], where: str) -> None:
    """A traffic target must be LATEST or a ready revision of this service."""
    if key == LATEST:
        return
    status = revisions.get(key)
    if status is None:
        raise InvalidSpec(
            f"{where}: revision {key!r} is not a revision of {service}"
            f"{did_you_mean(key, revisions)}; "
            f"`homerun revisions list --service {service}` shows them (or use LATEST)"
        )
    if status != RevisionStatus.READY:
        raise InvalidSpec(
            f"{where}: revision {key} is {status}, not ready: only ready revisions can take "
            "traffic or tags"
        )


def assign_percentages(
    entries: Iterable[TrafficEntry], percentages: Mapping[str, int]
) -> tuple[TrafficEntry, ...]:
    """gcloud's UpdateTraffic: given percentages are set; when they add up to less than 100,
    the targets that serve traffic now and were not named share the rest in proportion.

    Worked example: a=40, b=60 and `--to-revisions a=45` leaves 55 % for b alone; with a=20,
    b=30, c=50 and `--to-revisions a=60`, b and c split 40 % as 30:50, i.e. 15 and 25.
    """
    served, tagged = _normalized(entries)
    total = sum(served.values())
    if total != 100:
        raise InvalidSpec(f"the current traffic adds up to {total}%, not 100%; set it whole")
    for key, percent in percentages.items():
        if not 0 <= percent <= 100:
            raise InvalidSpec(f"{key}={percent}: a percentage must be 0..100")
    specified = sum(percentages.values())
    if specified > 100:
        raise InvalidSpec(f"the percentages add up to {specified}%, more than 100%")
    others = {key: percent for key, percent in served.items() if key not in percentages}
    if specified < 100 and not others:
        raise InvalidSpec(
            f"the percentages add up to {specified}%, not 100%, and no other revision serves "
            f"traffic that could take the remaining {100 - specified}%"
        )
    shares: dict[str, float] = {key: float(percent) for key, percent in percentages.items()}
    rest = 100 - specified
    if rest:
        others_total = sum(others.values())
        for key, percent in others.items():
            shares[key] = percent * rest / others_total
    whole = _round_to_100(shares)
    targets = [
        entry_for(key, percent)
        for key, percent in sorted(whole.items(), key=lambda item: _sort_key(item[0]))
        if percent > 0
    ]
    return (*targets, *tagged)


def retag(
    entries: Iterable[TrafficEntry],
    to_tag: Mapping[str, str],
    remove: Iterable[str] = (),
    clear_others: bool = False,
) -> tuple[TrafficEntry, ...]:
    """gcloud's UpdateTags: tags named in `to_tag` (tag -> revision or LATEST) move to new 0 %
    targets; removed (or, with clear_others, all other) tags go; 0 % targets left without a
    tag go with them."""
    removed = set(remove)
    kept = []
    for entry in entries:
        tag = entry.tag
        if clear_others or tag in removed or tag in to_tag:
            tag = None
        if entry.percent or tag:
            kept.append(replace(entry, tag=tag))
    kept.extend(entry_for(key, 0, tag) for tag, key in sorted(to_tag.items()))
    return tuple(kept)


def pin_latest(entries: Iterable[TrafficEntry], latest_ready: str) -> tuple[TrafficEntry, ...]:
    """`deploy --no-traffic`: LATEST's share goes to the revision LATEST means now, so that the
    revision being deployed gets none (and neither will later ones, until --to-latest)."""
    entries = tuple(entries) or DEFAULT_TRAFFIC
    served, tagged = _normalized(entries)
    if LATEST not in served:
        return entries
    share = served.pop(LATEST)
    served[latest_ready] = served.get(latest_ready, 0) + share
    targets = [
        entry_for(key, percent)
        for key, percent in sorted(served.items(), key=lambda item: _sort_key(item[0]))
    ]
    return (*targets, *tagged)


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedTarget:
    """A traffic entry with LATEST replaced by the revision it names now."""

    revision: str | None  # None: LATEST while no revision is ready
    percent: int
    tag: str | None
    latest: bool


def resolve(entries: Iterable[TrafficEntry], latest_ready: str | None) -> list[ResolvedTarget]:
    return [
        ResolvedTarget(
            latest_ready if entry.latest else entry.revision, entry.percent, entry.tag, entry.latest
        )
        for entry in entries
    ]


def served_percent(resolved: Iterable[ResolvedTarget], revision: str) -> int:
    return sum(target.percent for target in resolved if target.revision == revision)


def tags_of(resolved: Iterable[ResolvedTarget], revision: str) -> list[str]:
    return [target.tag for target in resolved if target.revision == revision and target.tag]


def traffic_problems(entries: Iterable[TrafficEntry]) -> list[tuple[str, str]]:
    """Knative's RouteSpec rules, as (field path under traffic, message) pairs."""
    problems: list[tuple[str, str]] = []
    seen_tags: dict[str, int] = {}
    total = 0
    for index, entry in enumerate(entries):
        total += entry.percent
        if not 0 <= entry.percent <= 100:
            problems.append((f"[{index}].percent", f"must be 0..100, got {entry.percent}"))
        if entry.tag is not None:
            if entry.tag in seen_tags:
                problems.append(
                    (
                        f"[{index}].tag",
                        f"multiple definitions for {entry.tag!r} "
                        f"(also traffic[{seen_tags[entry.tag]}].tag)",
                    )
                )
            else:
                seen_tags[entry.tag] = index
    if total != 100:
        problems.append(("", f"traffic targets sum to {total}, want 100"))
    return problems


# -- internals -------------------------------------------------------------------------------


def _normalized(
    entries: Iterable[TrafficEntry],
) -> tuple[dict[str, int], list[TrafficEntry]]:
    """Percent per target key (entries for the same key merged) and the tags, each moved to a
    0 % target of its own."""
    served: dict[str, int] = {}
    tagged: list[TrafficEntry] = []
    for entry in entries:
        if entry.tag:
            tagged.append(entry_for(entry.key, 0, entry.tag))
        if entry.percent:
            served[entry.key] = served.get(entry.key, 0) + entry.percent
    return served, tagged


def _round_to_100(shares: Mapping[str, float]) -> dict[str, int]:
    """Whole percentages adding up to round(sum): floor each, then give the lost points to the
    shares that lost most (ties: the smaller share, then by name), as gcloud does."""
    whole = {key: math.floor(share + 1e-9) for key, share in shares.items()}
    lost = round(sum(shares.values())) - sum(whole.values())
    order = sorted(
        shares,
        key=lambda key: (1 - (shares[key] - whole[key]), shares[key], _sort_key(key)),
    )
    for key in order[:lost]:
        whole[key] += 1
    return whole


def _sort_key(key: str) -> tuple[int, str]:
    return (1, key) if key == LATEST else (0, key)
