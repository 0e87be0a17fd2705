"""The nouns of worker pools: a pool's name and how many instances it may keep."""

from __future__ import annotations

import re

from homerun.errors import InvalidSpec

MAX_POOL_INSTANCES = 100
# A DNS label that starts with a letter, as Cloud Run requires; its revisions are POOL-0000N.
_POOL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")


def validate_pool_name(name: str) -> str:
    if not _POOL_NAME.match(name):
        raise InvalidSpec(
            f"invalid worker pool name {name!r}: use at most 49 lowercase letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen (e.g. 'consumer')"
        )
    return name
