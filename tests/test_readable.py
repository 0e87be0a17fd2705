"""Files a revision's own user reads are opened to others as far as their owner may read them."""

from __future__ import annotations

import stat
from pathlib import Path

from homerun.readable import share_read, shared_mode


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_owners_read_and_search_bits_are_given_to_others_and_nothing_more() -> None:
    assert shared_mode(0o600) == 0o644
    assert shared_mode(0o700) == 0o755
    assert shared_mode(0o200) == 0o200  # write-only stays the owner's
    assert shared_mode(0o640) == 0o644
    assert shared_mode(0o4700) == 0o4755  # other bits are kept as they are


def test_a_tree_under_umask_077_is_opened_and_links_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("not in the tree")
    outside.chmod(0o600)
    tree = tmp_path / "tree"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "module.py").write_text("x = 1\n")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "pkg" / "link").symlink_to(outside)
    for path, bits in [(tree, 0o700), (tree / "pkg", 0o700), (tree / "run.sh", 0o700)]:
        path.chmod(bits)
    (tree / "pkg" / "module.py").chmod(0o600)

    share_read(tree)

    assert mode(tree) == 0o755
    assert mode(tree / "pkg") == 0o755
    assert mode(tree / "pkg" / "module.py") == 0o644
    assert mode(tree / "run.sh") == 0o755
    assert mode(outside) == 0o600  # reached through a link only


def test_not_recursive_opens_the_folder_alone(tmp_path: Path) -> None:
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner").chmod(0o700)
    tmp_path.chmod(0o700)
    share_read(tmp_path, recursive=False)
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "inner") == 0o700
