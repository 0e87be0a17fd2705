"""Copy a source folder into an artifact, plainly or as a Dockerfile's COPY/WORKDIR lay it out."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from homerun.build.dockerfile import Copy, Dockerfile, Workdir
from homerun.errors import BuildError, DockerfileError

# Never part of an app: version control, bytecode, local virtualenvs, JavaScript packages.
SKIPPED_NAMES = frozenset({".git", "__pycache__", ".venv", "venv", "node_modules"})
IGNORE_FILES = (".dockerignore", ".gcloudignore")
_GLOB_CHARS = frozenset("*?[")


def check_source(source: Path) -> Path:
    """The source folder, resolved; BuildError when it is missing, not a folder, or empty."""
    if not source.exists():
        raise BuildError(
            f"source folder {source} does not exist: pass --source with the "
            "folder that holds your app (main.py, requirements.txt, maybe a "
            "Dockerfile)"
        )
    if not source.is_dir():
        raise BuildError(
            f"source {source} is a file, not a folder: pass the folder that "
            f"contains it (--source {source.parent})"
        )
    try:
        entries = [entry for entry in source.iterdir() if entry.name not in SKIPPED_NAMES]
    except PermissionError as error:
        raise BuildError(f"cannot read the source folder {source}: {error.strerror}") from error
    if not entries:
        raise BuildError(
            f"source folder {source} is empty: put your app in it (a main.py "
            "defining `app`, with a requirements.txt) and deploy again"
        )
    return source.resolve()


DEFAULT_MAX_SOURCE_BYTES = 512 * 1024 * 1024


def scan_source(source: Path, max_bytes: int = DEFAULT_MAX_SOURCE_BYTES) -> int:
    """Refuse a source with links out of its tree or over `max_bytes`; returns its size.

    Links are copied as links, so one to /etc/passwd or ../../secrets would let the app (and,
    with a remote daemon, its deployer) read a file that is not part of the source. Ignored
    paths (.gcloudignore, .dockerignore, SKIPPED_NAMES) count for neither check.
    """
    rules = IgnoreRules.load(source)
    root = source.resolve()
    total = 0
    pending = [(root, "")]
    while pending:
        folder, relative = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                rel = f"{relative}/{entry.name}" if relative else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if (is_dir and entry.name in SKIPPED_NAMES) or (
                    rules.ignores(rel, is_dir) and not (is_dir and rules.has_negations)
                ):
                    continue
                if entry.is_symlink():
                    target = Path(os.path.realpath(entry.path))
                    if not target.is_relative_to(root):
                        raise BuildError(
                            f"{source / rel} is a link to {os.readlink(entry.path)}, outside the "
                            "source folder: homerun refuses links out of the tree; copy the file "
                            "in, or list the link in .gcloudignore"
                        )
                elif is_dir:
                    pending.append((Path(entry.path), rel))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
                    if total > max_bytes:
                        raise BuildError(
                            f"source folder {source} is over {max_bytes // 2**20} MiB: leave out "
                            "what the app does not need with a .gcloudignore file (data, builds, "
                            "caches), or raise max-source-bytes in config.yaml"
                        )
    return total


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    negated: bool
    directory_only: bool
    anchored: bool  # matches from the folder root only (else: a name at any depth)

    def matches(self, relative: str, is_dir: bool) -> bool:
        if self.directory_only and not is_dir:
            return False
        if self.anchored:
            candidates = [relative]
        else:
            candidates = [relative, relative.rsplit("/", 1)[-1]]
        patterns = [self.pattern]
        if self.pattern.startswith("**/"):
            patterns.append(self.pattern[3:])
        return any(
            fnmatch.fnmatchcase(candidate, pattern)
            for candidate in candidates
            for pattern in patterns
        )


class IgnoreRules:
    """`.dockerignore` and `.gcloudignore` patterns; the last rule that matches decides.

    A simplification both formats share: fnmatch patterns on paths relative to the source,
    `!` to re-include, `#` comments. .dockerignore patterns are anchored at the root (Docker
    reads them so); .gcloudignore follows .gitignore, where a pattern without a slash matches
    a name at any depth and a trailing slash means directories only.
    """

    def __init__(self, rules: Iterable[IgnoreRule] = ()) -> None:
        self.rules = list(rules)

    @classmethod
    def load(cls, source: Path) -> IgnoreRules:
        rules: list[IgnoreRule] = []
        for name in IGNORE_FILES:
            path = source / name
            if path.is_file():
                rules.extend(_parse_ignore(source, path, gitignore=name == ".gcloudignore"))
        return cls(rules)

    @property
    def has_negations(self) -> bool:
        return any(rule.negated for rule in self.rules)

    def ignores(self, relative: str, is_dir: bool = False) -> bool:
        """Whether `relative` (posix, from the source root) is left out, itself or by a parent."""
        parts = relative.split("/")
        ignored = False
        for rule in self.rules:
            for depth in range(1, len(parts) + 1):
                prefix = "/".join(parts[:depth])
                if rule.matches(prefix, is_dir or depth < len(parts)):
                    ignored = not rule.negated
                    break
        return ignored


def _parse_ignore(
    source: Path, path: Path, *, gitignore: bool, seen: frozenset[Path] = frozenset()
) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if gitignore and line.startswith("#!include:"):
            included = source / line.split(":", 1)[1].strip()
            if included.is_file() and included not in seen:
                rules.extend(_parse_ignore(source, included, gitignore=True, seen=seen | {path}))
            continue
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        directory_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = not gitignore or "/" in pattern
        pattern = posixpath.normpath(pattern.lstrip("/")) if pattern.strip("/") else ""
        if pattern and pattern != ".":
            rules.append(IgnoreRule(pattern, negated, directory_only and gitignore, anchored))
    return rules


@dataclass(frozen=True)
class Layout:
    """Where the copied app landed."""

    cwd: Path  # where instances start: dest/app, or the final WORKDIR under dest/rootfs
    rootfs: Path | None  # dest/rootfs standing for the container's "/" (Dockerfile builds)

    def container_path(self, path: str) -> Path:
        """A container path (/app/requirements.txt) as a path inside the artifact."""
        if self.rootfs is None:
            raise ValueError("no rootfs: this artifact was not built from a Dockerfile")
        return self.rootfs / posixpath.normpath("/" + path).lstrip("/")


def lay_out(
    source: Path, dest: Path, dockerfile: Dockerfile | None, output: Callable[[str], None]
) -> Layout:
    """Copy the source into dest: as dest/app, or as the Dockerfile's COPY and WORKDIR say."""
    rules = IgnoreRules.load(source)
    exclude = dest.resolve()
    if dockerfile is None:
        app = dest / "app"
        output(f"copying {source} to {app}")
        copy_tree(source, app, rules=rules, exclude=exclude)
        return Layout(cwd=app, rootfs=None)

    layout = Layout(cwd=dest / "rootfs", rootfs=dest / "rootfs")
    layout.cwd.mkdir(parents=True, exist_ok=True)
    for step in dockerfile.steps:
        if isinstance(step, Workdir):
            layout.container_path(step.path).mkdir(parents=True, exist_ok=True)
        elif isinstance(step, Copy):
            _apply_copy(source, layout, step, dockerfile.path, rules, exclude)
            output(f"{step.keyword} {' '.join(step.sources)} {step.destination} (line {step.line})")
    cwd = layout.container_path(dockerfile.workdir)
    cwd.mkdir(parents=True, exist_ok=True)
    return Layout(cwd=cwd, rootfs=layout.rootfs)


def copy_tree(
    source: Path,
    target: Path,
    *,
    rules: IgnoreRules,
    relative: str = "",
    exclude: Path | None = None,
) -> None:
    """Copy the contents of `source` into `target`, skipping SKIPPED_NAMES and ignored paths.

    `relative` is where `source` sits inside the build context, for the ignore rules.
    Symbolic links are copied as links, as Docker's COPY does.
    """
    target.mkdir(parents=True, exist_ok=True)
    with os.scandir(source) as entries:
        for entry in sorted(entries, key=lambda entry: entry.name):
            path = Path(entry.path)
            rel = f"{relative}/{entry.name}" if relative else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and entry.name in SKIPPED_NAMES:
                continue
            if exclude is not None and is_dir and path.resolve() == exclude:
                continue
            if rules.ignores(rel, is_dir) and not (is_dir and rules.has_negations):
                continue
            destination = target / entry.name
            if entry.is_symlink():
                if destination.is_symlink() or destination.is_file():
                    destination.unlink()
                destination.symlink_to(os.readlink(path))
            elif is_dir:
                copy_tree(path, destination, rules=rules, relative=rel, exclude=exclude)
            else:
                shutil.copy2(path, destination)


def _apply_copy(
    source: Path,
    layout: Layout,
    step: Copy,
    dockerfile_path: str,
    rules: IgnoreRules,
    exclude: Path,
) -> None:
    matches: list[tuple[Path, str]] = []
    for pattern in step.sources:
        relative = posixpath.normpath(pattern.lstrip("/"))
        if relative == ".." or relative.startswith("../"):
            raise DockerfileError(
                dockerfile_path,
                step.line,
                f"{step.keyword} {pattern}: outside the build context "
                f"{source}; move it into the source folder",
            )
        if _GLOB_CHARS & set(relative):
            found = sorted(source.glob(relative))
            found_relative = [(path, path.relative_to(source).as_posix()) for path in found]
            found_relative = [
                (path, rel) for path, rel in found_relative if not rules.ignores(rel, path.is_dir())
            ]
        else:
            path = source / relative
            rel = "" if relative == "." else relative
            found_relative = (
                [(path, rel)]
                if path.exists() and not (rel and rules.ignores(rel, path.is_dir()))
                else []
            )
        if not found_relative:
            excluded = (
                " (excluded by .dockerignore/.gcloudignore)" if (source / relative).exists() else ""
            )
            raise DockerfileError(
                dockerfile_path,
                step.line,
                f"{step.keyword} {pattern}: no such file in the build context {source}{excluded}",
            )
        matches.extend(found_relative)

    destination = layout.container_path(step.destination)
    into_directory = step.destination.endswith("/") or len(matches) > 1 or destination.is_dir()
    for path, rel in matches:
        if path.is_dir():
            # A directory's contents are copied, not the directory itself (Docker's rule).
            copy_tree(path, destination, rules=rules, relative=rel, exclude=exclude)
        elif into_directory:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / path.name)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
