"""What a source folder asks of its Python: the files and settings read, their precedence, and
a clear error naming the file and line when one cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.build.dockerfile import parse
from homerun.build.python_request import read_request
from homerun.errors import BuildError

from .helpers import write_tree


def _asked(source: Path, env: dict[str, str] | None = None) -> tuple[str, str, tuple[str, ...]]:
    found = read_request(source, None, env or {}, {})
    assert found.request is not None
    return found.request.asked, found.request.where, found.not_read


@pytest.mark.parametrize(
    ("text", "version", "line"),
    [
        ("3.12\n", "3.12", 1),
        ("3.12.4", "3.12.4", 1),  # no newline at the end, as editors may leave it
        ("  3.9.18  # the one CI uses\n", "3.9.18", 1),
        ("# pinned for the deploy\n\n3.10\n", "3.10", 3),
        ("3.11\n3.12\n2.7\n", "3.11", 1),  # pyenv: the first is `python`, the rest extras
        ("system\n", "system", 1),
        ("3.12\r\n", "3.12", 1),
    ],
)
def test_python_version_is_read_as_pyenv_reads_it(
    tmp_path: Path, text: str, version: str, line: int
) -> None:
    write_tree(tmp_path, {".python-version": text})
    assert _asked(tmp_path)[:2] == (version, f"{tmp_path / '.python-version'}:{line}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# only a comment\n\n", "names no Python version"),
        ("\n\npypy3.10-7.3.12\n", ":3: 'pypy3.10-7.3.12' is not a Python version homerun can run"),
        ("3.12-dev\n", ":1: '3.12-dev' is not a Python version"),
        ("my-virtualenv\n", ":1: 'my-virtualenv' is not a Python version"),
    ],
)
def test_a_python_version_file_that_cannot_be_read_names_its_line(
    tmp_path: Path, text: str, message: str
) -> None:
    write_tree(tmp_path, {".python-version": text})
    with pytest.raises(BuildError, match=str(tmp_path / ".python-version")) as raised:
        read_request(tmp_path, None, {}, {})
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("text", "version"),
    [("python-3.12.4\n", "3.12.4"), ("python-3.12", "3.12"), ("\npython-3.8\n", "3.8")],
)
def test_runtime_txt_names_a_version(tmp_path: Path, text: str, version: str) -> None:
    write_tree(tmp_path, {"runtime.txt": text})
    assert _asked(tmp_path)[0] == version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3.12\n", ":1: '3.12' is not a runtime.txt Python version; write python-X.Y"),
        ("\npython3.12\n", ":2: 'python3.12' is not a runtime.txt Python version"),
        ("python-3\n", ":1: 'python-3' is not"),
        ("\n", "is empty"),
    ],
)
def test_a_malformed_runtime_txt_names_its_line(tmp_path: Path, text: str, message: str) -> None:
    write_tree(tmp_path, {"runtime.txt": text})
    with pytest.raises(BuildError) as raised:
        read_request(tmp_path, None, {}, {})
    assert str(raised.value).startswith(str(tmp_path / "runtime.txt"))
    assert message in str(raised.value)


def test_requires_python_is_a_specifier(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": '[build-system]\nrequires = []\n\n[project]\nname = "app"\n'
            'requires-python = ">=3.10,<3.13"\n'
        },
    )
    found = read_request(tmp_path, None, {}, {})
    assert found.request is not None and found.request.specifier is not None
    assert found.request.asked == ">=3.10,<3.13"
    assert found.request.where == f"{tmp_path / 'pyproject.toml'}:6"
    assert "3.12.1" in found.request.specifier and "3.13.0" not in found.request.specifier


def test_a_malformed_requires_python_names_its_line(tmp_path: Path) -> None:
    write_tree(
        tmp_path, {"pyproject.toml": '[project]\nname = "app"\nrequires-python = "=>3.10"\n'}
    )
    with pytest.raises(BuildError) as raised:
        read_request(tmp_path, None, {}, {})
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'pyproject.toml'}:3: requires-python = '=>3.10' ")
    assert "is not a version specifier" in message and '">=3.10,<3.13"' in message


def test_requires_python_outside_project_is_not_an_ask(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {"pyproject.toml": '[tool.other]\nrequires-python = ">=3.12"\n[project]\nname = "a"\n'},
    )
    assert read_request(tmp_path, None, {}, {}).request is None


def test_precedence_variable_then_files_then_requires_python(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            ".python-version": "3.9\n",
            "runtime.txt": "python-3.10\n",
            "pyproject.toml": '[project]\nname = "a"\nrequires-python = ">=3.8"\n',
        },
    )
    asked, _, not_read = _asked(tmp_path, {"GOOGLE_PYTHON_VERSION": "3.12.x"})
    assert asked == "3.12"
    assert not_read == (".python-version", "runtime.txt", "pyproject.toml requires-python")
    assert _asked(tmp_path)[0] == "3.9"
    (tmp_path / ".python-version").unlink()
    assert _asked(tmp_path)[0] == "3.10"
    (tmp_path / "runtime.txt").unlink()
    assert _asked(tmp_path)[0] == ">=3.8"


def test_the_variable_from_a_project_toml_and_a_bad_one(tmp_path: Path) -> None:
    found = read_request(tmp_path, None, {}, {"GOOGLE_PYTHON_VERSION": "3.10"})
    assert found.request is not None and found.request.asked == "3.10"
    assert found.request.where == "GOOGLE_PYTHON_VERSION (project.toml)"
    with pytest.raises(BuildError, match=r"GOOGLE_PYTHON_VERSION \(the env vars\): 'latest'"):
        read_request(tmp_path, None, {"GOOGLE_PYTHON_VERSION": "latest"}, {})


def test_a_dockerfile_in_use_decides_alone(tmp_path: Path) -> None:
    write_tree(tmp_path, {".python-version": "not even a version\n", "runtime.txt": "x\n"})
    dockerfile = parse("FROM python:3.10-slim\nCMD python main.py\n", "Dockerfile")
    found = read_request(tmp_path, dockerfile, {}, {})
    assert found.request is not None and found.request.from_dockerfile
    assert found.request.asked == "3.10"
    assert found.request.label == "FROM python:3.10-slim (line 1)"
    assert found.not_read == (".python-version", "runtime.txt")


def test_nothing_asks(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": "", "pyproject.toml": '[project]\nname = "a"\n'})
    assert read_request(tmp_path, None, {}, {}).request is None
