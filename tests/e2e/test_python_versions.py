"""The Python an app asks for (`.python-version`, `runtime.txt`, `requires-python`), deployed
through the daemon on this machine's pyenv Pythons: the app answers with its sys.version."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from homerun.build.pythons import matches, pythons_on_machine

from .harness import Platform, describe

pytestmark = pytest.mark.e2e

# The standard library's server, so any Python from 3.6 serves it without a pip install.
APP = """\
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.version.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Answer).serve_forever()
"""


def _pyenv(prefix: str) -> str:
    found = [
        python.version
        for python in pythons_on_machine(os.environ)
        if python.where == "pyenv" and matches(python.version, prefix)
    ]
    if not found:
        pytest.skip(f"no pyenv Python {prefix} here")
    return max(found, key=lambda version: tuple(int(part) for part in version.split(".")))


def _source(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (".python-version", "runtime.txt", "pyproject.toml"):
        (folder / name).unlink(missing_ok=True)
    for name, text in {"main.py": APP, "Procfile": "web: python main.py\n", **files}.items():
        (folder / name).write_text(text)
    return folder


def test_each_file_picks_the_python_the_app_answers_from(
    platform: Platform, tmp_path: Path
) -> None:
    source = tmp_path / "pyver"
    cases = [
        ({".python-version": "# pinned\n3.12\n"}, "3.12", ".python-version (line 2)"),
        ({"runtime.txt": "python-3.10\n"}, "3.10", "runtime.txt (line 1: python-3.10)"),
        (
            {"pyproject.toml": '[project]\nname = "v"\nrequires-python = ">=3.8,<3.10"\n'},
            "3.9",
            "pyproject.toml requires-python (line 3: >=3.8,<3.10)",
        ),
    ]
    for files, version, label in cases:
        full = _pyenv(version)
        result = platform.deploy_ok("pyver", _source(source, files))
        output = result.stdout + result.stderr
        assert f"{label}: Python {full} (" in output, describe(result)
        answer = platform.request("pyver", "GET", "/")
        assert answer.status_code == 200 and answer.text.startswith(f"{full} "), answer.text


def test_a_newer_python_than_the_machine_has_is_refused_and_the_old_one_serves(
    platform: Platform, tmp_path: Path
) -> None:
    full = _pyenv("3.12")
    source = _source(tmp_path / "pyref", {".python-version": "3.12\n"})
    platform.deploy_ok("pyref", source)
    _source(source, {".python-version": "3.99\n"})
    refused = platform.deploy("pyref", source)
    assert refused.returncode != 0, describe(refused)
    assert f"{source / '.python-version'}:1: asks for Python 3.99, and this machine has none" in (
        refused.stderr
    ), describe(refused)
    assert "pyenv install 3.99" in refused.stderr
    assert platform.request("pyref", "GET", "/").text.startswith(f"{full} ")
