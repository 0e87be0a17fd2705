"""`homerun run ...`: gcloud's spelling, so that a README's `gcloud run …` lines run with
`homerun` for `gcloud`: deploy, and every command of each group `gcloud run` has here."""

from __future__ import annotations

import dataclasses

from homerun.cli import deploy, domain_mappings, jobs, revisions, services, worker_pools
from homerun.cli._commands import Command, Group


def _spelled_under_run(entry: Command | Group, group: str) -> Command | Group:
    """`entry` of the group `group`, its examples written `homerun run GROUP …` as its help
    under `homerun run` shows them."""
    if isinstance(entry, Group):
        return dataclasses.replace(
            entry, entries=tuple(_spelled_under_run(each, group) for each in entry.entries)
        )
    examples = tuple(
        (what, line.replace(f"homerun {group} ", f"homerun run {group} "))
        for what, line in entry.examples
    )
    return dataclasses.replace(entry, examples=examples)


# `gcloud run`'s groups that homerun has (gcloud's regions, multi-region-services... it has not).
GROUPS = (services.GROUP, revisions.GROUP, jobs.GROUP, worker_pools.GROUP, domain_mappings.GROUP)

GROUP = Group(
    "run",
    "gcloud's spelling: `homerun run deploy` is `homerun deploy`, `homerun run services ...` "
    "is `homerun services ...`, and so for each group of `gcloud run` that homerun has",
    (
        deploy.RUN_DEPLOY,
        *(_spelled_under_run(group, group.name) for group in GROUPS),
    ),
)
