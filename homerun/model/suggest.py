"""A "did you mean" for a name that is not there (a service, revision, tag, field or flag)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest to `word` when one is near enough to be a typo."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """'; did you mean 'helloworld'?' (to append to an error), or '' when nothing is close."""
    match = closest(word, candidates)
    return f"; did you mean {match!r}?" if match else ""
