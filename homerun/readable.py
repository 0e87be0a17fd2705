"""Files a sandboxed revision's own user must read, made readable by others whatever the umask.

When homerun runs as root, an instance runs as an unprivileged user of its own
(runtime/sandbox.py). What it reads was written by root: the revision's files (copied with
their source's modes), its virtualenv (written by pip under the daemon's umask), homerun's
`_site` and `_zygote` programs (as installed or checked out) and the service hosts file. Under
a umask of 077 they are root's alone, and the app fails with "Permission denied". Other users
of the machine still cannot reach them: HOMERUN_HOME is 0700, and inside a sandbox the other
revisions' folders are hidden.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def shared_mode(mode: int) -> int:
    """`mode` with group and others given the owner's read and execute (search) bits."""
    owner = mode & (stat.S_IRUSR | stat.S_IXUSR)
    return mode | owner >> 3 | owner >> 6


def share_read(path: Path, *, recursive: bool = True) -> None:
    """Give group and others the read and search bits the owner has on `path` (and, with
    `recursive`, everything under it). Symbolic links are left alone, and not followed."""
    _share(path)
    if not recursive or path.is_symlink() or not path.is_dir():
        return
    for folder, folders, files in os.walk(path):
        for name in (*folders, *files):
            _share(Path(folder, name))


def _share(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return
    mode = stat.S_IMODE(info.st_mode)
    if shared_mode(mode) != mode:
        path.chmod(shared_mode(mode))


def hidden_on_the_way(
    always: list[Path], shown: list[Path], *, open_at: tuple[Path, ...] = ()
) -> list[Path]:
    """Folders a sandbox hides under an empty tmpfs: `always` (those that exist, but `/`), and
    for each shown path the first folder above it that others may not enter (a pyenv under a
    0700 /root; a HOMERUN_HOME in a 0700 folder), so that the sandbox's user reaches the path
    through the tmpfs's folders, made 0755. Folders in `open_at` are the sandbox's own tmpfs
    already: nothing at or below them is looked at. Outermost first."""
    hidden = {path for path in always if path.exists() and path != Path("/")}
    for path in shown:
        for ancestor in reversed(path.parents):
            if ancestor in hidden or ancestor in open_at:
                break  # from here on the tmpfs's folders, made 0755
            try:
                mode = ancestor.stat().st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                hidden.add(ancestor)
                break
    return sorted(hidden, key=lambda path: len(path.parts))
