"""What an instance sees (Cloud Run's container contract) and what homerun keeps of its output."""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from .harness import Platform

pytestmark = pytest.mark.e2e


def test_instance_environment(platform: Platform, streaming: str) -> None:
    env = platform.env_of(streaming)
    assert env["PORT"].isdigit() and int(env["PORT"]) != platform.port
    assert env["K_SERVICE"] == streaming
    assert env["K_CONFIGURATION"] == streaming
    assert re.fullmatch(rf"{streaming}-00001-[a-z0-9]{{3}}", env["K_REVISION"]), env["K_REVISION"]
    # User variables, a value with '=' and '?' in it kept whole.
    assert env["GREETING"] == "hello"
    assert env["DSN"] == "db://u@h/x?a=b"
    assert env["stdin"] == "eof"
    # The working directory holds the deployed code, as the image's WORKDIR would.
    assert env["main_py_in_cwd"] is True


def test_instance_runs_in_its_own_process_group(platform: Platform, streaming: str) -> None:
    env = platform.env_of(streaming)
    assert env["pgid"] != os.getpgid(platform.pid)
    assert env["pid"] != platform.pid


def test_logs_read_shows_the_app_output(platform: Platform, streaming: str) -> None:
    marker = uuid.uuid4().hex
    assert platform.request(streaming, "GET", "/log", params={"msg": marker}).status_code == 200
    # Logs travel from the instance's pipes to the store asynchronously: poll, bounded.
    deadline = time.monotonic() + 15
    while True:
        result = platform.run("logs", "read", streaming, "--limit", "50", timeout=30)
        assert result.returncode == 0, result.stderr
        if f"app-log {marker}" in result.stdout and f"app-err {marker}" in result.stdout:
            break
        assert time.monotonic() < deadline, f"marker {marker} not in logs:\n{result.stdout}"
        time.sleep(0.3)
    # --limit bounds the output (a header line may come with the one entry).
    limited = platform.run("logs", "read", streaming, "--limit", "1", timeout=30)
    assert limited.returncode == 0
    assert len(limited.stdout.strip().splitlines()) <= 3, limited.stdout
