"""Which old revisions and cached virtualenvs to delete: pure choices, the control plane acts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from homerun.model.states import RevisionStatus

# Only these states are finished; a revision being built or started is never collected.
FINISHED = frozenset({RevisionStatus.READY, RevisionStatus.FAILED})
# build/venv.py names a virtualenv by 24 hex digits of its key.
_VENV_NAME = re.compile(r"^[0-9a-f]{24}$")


def doomed_revisions(
    revisions: Sequence[tuple[str, str]], protected: Iterable[str], keep: int
) -> list[str]:
    """Revisions to delete: of those that serve nothing (not protected: no traffic, no tag, not
    the latest created or ready), the ones past the newest `keep`.

    `revisions` is (name, status), newest first. With keep=2 and a-00005 serving, a-00004..1
    idle: a-00004 and a-00003 stay, a-00002 and a-00001 go.
    """
    protected = set(protected)
    idle = [name for name, status in revisions if name not in protected and status in FINISHED]
    return idle[max(keep, 0) :]


def unused_venvs(entries: Iterable[Path], referenced: Iterable[Path]) -> list[Path]:
    """Cached virtualenvs (folders named by their key) that no remaining revision runs in."""
    used = {path.resolve() for path in referenced}
    return sorted(
        entry
        for entry in entries
        if _VENV_NAME.match(entry.name)
        and entry.is_dir()
        and not entry.is_symlink()
        and entry.resolve() not in used
    )
