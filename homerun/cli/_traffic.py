"""A service's traffic as gcloud shows it: one entry per revision named in the traffic block and
one for LATEST, apart even when LATEST names that same revision now (googlecloudsdk's
api_lib/run/traffic_pair.py), since a deploy moves the one and not the other."""

from __future__ import annotations

from dataclasses import dataclass

from homerun.model.views import ServiceSummary, TrafficSpec
from homerun.traffic import LATEST


@dataclass(frozen=True)
class TrafficPair:
    """The targets of one key: a revision by name, or LATEST."""

    key: str  # a revision's name, or LATEST
    revision: str | None  # LATEST: the revision it names now; None while none is ready
    percent: int
    tags: dict[str, str]  # tag -> its URL, in the order of the traffic block

    @property
    def latest(self) -> bool:
        return self.key == LATEST


def traffic_pairs(summary: ServiceSummary) -> list[TrafficPair]:
    """The traffic block as set, by key: revisions by name first, LATEST last (gcloud's
    order). Worked example: `--update-tags green=S-1` then `--to-tags green=30` leaves S-1 30 %
    with the tag green, and LATEST 70 % (S-1 too, until the next deploy)."""
    urls = {route.tag: route.url or "" for route in summary.traffic if route.tag}
    percents: dict[str, int] = {}
    tags: dict[str, dict[str, str]] = {}
    # An empty block is Knative's default: everything to LATEST.
    for entry in summary.traffic_spec or [TrafficSpec(percent=100, latest=True)]:
        key = LATEST if entry.latest else str(entry.revision)
        percents[key] = percents.get(key, 0) + entry.percent
        if entry.tag:
            tags.setdefault(key, {})[entry.tag] = urls.get(entry.tag, "")
    keys = sorted(percents, key=lambda key: (key == LATEST, key))
    return [
        TrafficPair(
            key=key,
            revision=summary.latest_ready_revision if key == LATEST else key,
            percent=percents[key],
            tags=tags.get(key, {}),
        )
        for key in keys
    ]


def summary_lines(pairs: list[TrafficPair]) -> list[str]:
    """One line per pair: its share, its revision (LATEST marked), its tags. A revision tagged
    without a share of its own that LATEST names now has its tags on LATEST's line."""
    latest = next((pair for pair in pairs if pair.latest), None)
    tags_on_latest: dict[str, str] = dict(latest.tags) if latest else {}
    shown = []
    for pair in pairs:
        if latest and not pair.latest and not pair.percent and pair.key == latest.revision:
            tags_on_latest.update(pair.tags)
        else:
            shown.append(pair)
    lines = []
    for pair in shown:
        revision = pair.revision or "(no revision ready)"
        line = f"  {pair.percent:>3}% {revision}" + (" (LATEST)" if pair.latest else "")
        tags = tags_on_latest if pair.latest else pair.tags
        if tags:
            line += "  " + ", ".join(f"tag {tag}: {url}" for tag, url in tags.items())
        lines.append(line)
    return lines


@dataclass(frozen=True)
class GcloudTag:
    """A tag as gcloud's TrafficTag prints it; the field names are its JSON keys."""

    tag: str
    url: str
    inSpec: bool
    inStatus: bool


@dataclass(frozen=True)
class GcloudTrafficEntry:
    """A pair as `gcloud run services update-traffic --format json` prints it: the fields of
    its TrafficTargetPair, in its key order, percents as strings."""

    displayPercent: str
    displayRevisionId: str
    displayTags: str
    key: str
    latestRevision: bool
    revisionName: str | None
    serviceUrl: str
    specPercent: str
    specTags: str
    statusPercent: str
    statusTags: str
    tags: list[GcloudTag]
    urls: list[str]


def as_gcloud(pair: TrafficPair, service_url: str) -> GcloudTrafficEntry:
    """The pair with gcloud's fields. The traffic set is the traffic served here, so spec and
    status agree; google-github-actions/deploy-cloudrun reads `urls` and `serviceUrl`."""
    percent = str(pair.percent)
    tags = ", ".join(sorted(pair.tags)) or "-"
    revision = pair.revision or "-"
    return GcloudTrafficEntry(
        displayPercent=f"{percent}%",
        displayRevisionId=f"{LATEST} (currently {revision})" if pair.latest else revision,
        displayTags="" if tags == "-" else tags,
        key=pair.key,
        latestRevision=pair.latest,
        revisionName=pair.revision,
        serviceUrl=service_url,
        specPercent=percent,
        specTags=tags,
        statusPercent=percent,
        statusTags=tags,
        tags=[
            GcloudTag(tag, pair.tags[tag], inSpec=True, inStatus=True) for tag in sorted(pair.tags)
        ],
        urls=sorted(url for url in pair.tags.values() if url),
    )
