"""`homerun config` over a fake client: the settings, where each comes from, and the daemon
that runs with others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import FakeClient, Run


@pytest.fixture(autouse=True)
def no_venv_cache_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOMERUN_VENV_CACHE", raising=False)


def test_without_config_yaml_every_setting_is_its_default(run: Run, home: Path) -> None:
    result = run("config")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[:4] == [
        f"# HOMERUN_HOME={home} (environment HOMERUN_HOME)",
        f"# {home}/config.yaml: absent; create it to change a setting below",
        f"{'listen: 127.0.0.1':<48} # default",
        f"{'port: 8080':<48} # default",
    ]
    assert f"{'admin-listen: ' + repr(''):<48} # default" in lines
    assert f"{'venv-cache: ' + str(home / 'venvs'):<48} # default" in lines
    assert "autoscaler:" in lines
    assert f"{'  stable-window: 60.0':<48} # default" in lines
    # The price table nests two deep, as config.yaml would write it.
    at = lines.index("prices:")
    assert lines[at + 3] == "  request-based:"
    assert lines[at + 4] == f"{'    per-vcpu-second: 2.4e-05':<48} # default"
    assert lines[-2].startswith("# Read when the daemon starts")
    assert "--port N --listen ADDRESS` overrides those two for that run only" in lines[-1]


def test_values_from_config_yaml_and_the_environment_say_so(
    run: Run, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("port: 8080\nzygote: false\nautoscaler:\n  max-scale: 5\n")
    monkeypatch.setenv("HOMERUN_VENV_CACHE", "/srv/venvs")
    out = run("config").out
    assert f"# {home}/config.yaml: read\n" in out
    assert f"{'port: 8080':<48} # config.yaml\n" in out
    assert f"{'zygote: false':<48} # config.yaml\n" in out
    assert f"{'  max-scale: 5':<48} # config.yaml\n" in out
    assert f"{'venv-cache: /srv/venvs':<48} # environment HOMERUN_VENV_CACHE\n" in out
    assert "The daemon running now" not in out  # the fake's router is on 8080 too


def test_a_daemon_running_on_another_port_is_pointed_out(
    run: Run, home: Path, fake: FakeClient
) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("port: 9090\n")
    out = run("config").out
    assert (
        "# The daemon running now (pid 4242) has its router on http://127.0.0.1:8080,\n"
        "# not http://127.0.0.1:9090: it was started with `homerun up --port/--listen` or before\n"
        "# config.yaml changed. The settings above apply from its next start.\n"
    ) in out
    fake.running = False  # no daemon: nothing to compare with, and no error
    result = run("config")
    assert result.code == 0 and "The daemon running now" not in result.out


def test_json_for_scripts(run: Run, home: Path) -> None:
    document = json.loads(run("config", "--format", "json").out)
    assert document["home"] == {"value": str(home), "source": "environment HOMERUN_HOME"}
    assert document["config_file"] == {"path": str(home / "config.yaml"), "exists": False}
    assert document["settings"]["port"] == {"value": 8080, "source": "default"}
    assert document["settings"]["autoscaler.max-scale"] == {"value": 100, "source": "default"}


def test_a_mistake_in_config_yaml_is_reported_as_at_start(run: Run, home: Path) -> None:
    home.mkdir()
    (home / "config.yaml").write_text("prot: 9090\n")
    result = run("config")
    assert result.code == 1
    assert "unknown setting 'prot'; did you mean 'port'?" in result.err
