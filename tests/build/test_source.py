"""Source validation, ignore files, and the Dockerfile's COPY/WORKDIR layout on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.build.dockerfile import parse
from homerun.build.source import IgnoreRules, check_source, copy_tree, lay_out, scan_source
from homerun.errors import BuildError, DockerfileError

from .helpers import Output, write_tree


def _files(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file())


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist: pass --source"):
        check_source(tmp_path / "nope")


def test_source_that_is_a_file(tmp_path: Path) -> None:
    file = write_tree(tmp_path, {"main.py": ""}) / "main.py"
    with pytest.raises(BuildError, match=f"is a file, not a folder.*--source {tmp_path}"):
        check_source(file)


@pytest.mark.parametrize("files", [{}, {".git/HEAD": "ref", "__pycache__/x.pyc": ""}])
def test_empty_source(tmp_path: Path, files: dict[str, str]) -> None:
    source = write_tree(tmp_path / "app", files)
    with pytest.raises(BuildError, match=f"{source} is empty: put your app in it"):
        check_source(source)


def test_plain_copy_skips_tooling_folders_and_ignored_paths(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": "app = None",
            "pkg/mod.py": "",
            "pkg/__pycache__/mod.cpython-311.pyc": "",
            ".git/HEAD": "",
            ".venv/bin/python": "",
            "venv/lib/x.py": "",
            "node_modules/left-pad/index.js": "",
            "secrets.env": "",
            "notes/todo.md": "",
            "notes/keep.md": "",
            "deep/dir/debug.log": "",
            "build/out.txt": "",
            "src_build/x.txt": "",
            ".dockerignore": "secrets.env\nnotes\n!notes/keep.md\n",
            ".gcloudignore": "*.log\nbuild/\n",
        },
    )
    dest = tmp_path / "dest"
    layout = lay_out(source, dest, None, Output())
    assert layout.cwd == dest / "app" and layout.rootfs is None
    assert _files(layout.cwd) == [
        ".dockerignore",
        ".gcloudignore",
        "main.py",
        "notes/keep.md",
        "pkg/mod.py",
        "src_build/x.txt",
    ]


@pytest.mark.parametrize(
    ("lines", "gitignore", "path", "is_dir", "ignored"),
    [
        (["*.pyc"], False, "a.pyc", False, True),
        (["*.pyc"], False, "pkg/a.pyc", False, True),  # fnmatch's * crosses /: a simplification
        (["/docs"], False, "docs/index.md", False, True),
        (["docs", "!docs/keep.md"], False, "docs/keep.md", False, False),
        (["**/*.log"], False, "x.log", False, True),
        (["tmp/"], True, "tmp", True, True),
        (["tmp/"], True, "tmp", False, False),  # a file named tmp is not a directory
        (["*.log"], True, "a/b/c.log", False, True),
        (["a/*.log"], True, "b/a/c.log", False, False),  # a slash anchors it at the root
    ],
)
def test_ignore_rules(
    tmp_path: Path, lines: list[str], gitignore: bool, path: str, is_dir: bool, ignored: bool
) -> None:
    name = ".gcloudignore" if gitignore else ".dockerignore"
    write_tree(tmp_path, {name: "# comment\n\n" + "\n".join(lines) + "\n"})
    assert IgnoreRules.load(tmp_path).ignores(path, is_dir) is ignored


def test_gcloudignore_can_include_gitignore(tmp_path: Path) -> None:
    write_tree(tmp_path, {".gitignore": "*.sqlite3\n", ".gcloudignore": "#!include:.gitignore\n"})
    assert IgnoreRules.load(tmp_path).ignores("db.sqlite3")


def test_a_destination_inside_the_source_is_not_copied_into_itself(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"main.py": ""})
    dest = source / ".homerun" / "rev1"
    copy_tree(source, dest / "app", rules=IgnoreRules(), exclude=(source / ".homerun").resolve())
    assert _files(dest / "app") == ["main.py"]


def test_dockerfile_layout(tmp_path: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "requirements/prod.txt": "flask\n",
            "main.py": "",
            "lib/util.py": "",
            "conf/a.ini": "",
            "conf/b.ini": "",
            "conf/c.txt": "",
            "scripts/start.sh": "",
            "README.md": "",
        },
    )
    dockerfile = parse(
        "FROM python:3.12-slim\n"
        "WORKDIR /srv\n"
        "COPY requirements/prod.txt /tmp/requirements.txt\n"  # a file to a file path
        "COPY main.py .\n"  # into the WORKDIR
        "COPY lib ./lib\n"  # a folder's contents
        "COPY conf/*.ini /etc/app/\n"  # a wildcard
        "ADD scripts/start.sh /usr/local/bin/\n"
        "WORKDIR /srv/data\n"
        "WORKDIR /srv\n",
        str(source / "Dockerfile"),
    )
    dest = tmp_path / "dest"
    layout = lay_out(source, dest, dockerfile, Output())
    assert layout.rootfs == dest / "rootfs"
    assert layout.cwd == dest / "rootfs" / "srv"
    assert _files(layout.rootfs) == [
        "etc/app/a.ini",
        "etc/app/b.ini",
        "srv/lib/util.py",
        "srv/main.py",
        "tmp/requirements.txt",
        "usr/local/bin/start.sh",
    ]
    assert (layout.rootfs / "srv" / "data").is_dir()  # WORKDIR creates its folder


def test_copy_of_a_missing_file_names_the_line(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"main.py": ""})
    dockerfile = parse(
        "FROM python:3.12\nWORKDIR /app\nCOPY requirements.txt .\n", "src/Dockerfile"
    )
    with pytest.raises(
        DockerfileError,
        match=r"src/Dockerfile:3: COPY requirements.txt: "
        r"no such file in the build context",
    ):
        lay_out(source, tmp_path / "dest", dockerfile, Output())


def test_copy_of_an_ignored_file_says_so(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"main.py": "", ".env": "", ".dockerignore": ".env\n"})
    dockerfile = parse("FROM python:3.12\nCOPY .env /app/\n")
    with pytest.raises(DockerfileError, match="excluded by .dockerignore"):
        lay_out(source, tmp_path / "dest", dockerfile, Output())


def test_copy_from_outside_the_context_is_refused(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"main.py": ""})
    dockerfile = parse("FROM python:3.12\nCOPY ../secrets /app/\n")
    with pytest.raises(DockerfileError, match="outside the build context"):
        lay_out(source, tmp_path / "dest", dockerfile, Output())


def test_links_out_of_the_tree_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "app"
    source.mkdir()
    (source / "main.py").write_text("app = None\n")
    (source / "inside").symlink_to("main.py")
    assert scan_source(source) == len("app = None\n")
    (source / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(BuildError, match=r"passwd is a link to /etc/passwd, outside"):
        scan_source(source)
    (source / "passwd").unlink()
    (source / "up").symlink_to("../../")
    with pytest.raises(BuildError, match="outside the source folder"):
        scan_source(source)
    (source / ".gcloudignore").write_text("up\n")
    scan_source(source)  # an ignored link is never copied


def test_huge_sources_are_refused_above_the_limit(tmp_path: Path) -> None:
    source = tmp_path / "app"
    (source / "data").mkdir(parents=True)
    (source / "main.py").write_text("app = None\n")
    (source / "data" / "big.bin").write_bytes(b"\0" * 4096)
    with pytest.raises(BuildError, match="over 0 MiB.*gcloudignore"):
        scan_source(source, max_bytes=1024)
    (source / ".gcloudignore").write_text("data/\n")
    assert scan_source(source, max_bytes=1024) < 1024
