"""The signing key and the admin token: made once with mode 0600, refused when others can
read them."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from homerun.access import keys
from homerun.errors import HomerunError


@pytest.mark.parametrize("make", [keys.signing_key, keys.admin_token])
def test_made_at_first_use_private_and_kept(
    make: Callable[[Path], bytes | str], tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    first = make(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert make(path) == first
    assert len(first) >= 32


@pytest.mark.parametrize("make", [keys.signing_key, keys.admin_token])
def test_readable_by_others_or_damaged_is_an_error(
    make: Callable[[Path], bytes | str], tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    make(path)
    path.chmod(0o644)
    with pytest.raises(HomerunError, match="chmod 600"):
        make(path)
    path.chmod(0o600)
    path.write_text("x\n")
    with pytest.raises(HomerunError, match="damaged"):
        make(path)
