"""config.yaml: what it sets, and the errors for what it cannot mean."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from homerun.config import CONFIG_FILE, DEFAULT, load, load_settings
from homerun.errors import InvalidSpec


def settings_from(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    (tmp_path / "config.yaml").write_text(text)
    return load_settings(tmp_path)


def test_settings_are_read_and_overrides_win(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("port: 9000\ntelemetry: false\nzygote: false\n")
    settings = load_settings(tmp_path, port=9100)
    assert (settings.port, settings.telemetry, settings.zygote) == (9100, False, False)


def test_a_misspelled_setting_is_refused_with_the_likely_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec) as error:
        settings_from(tmp_path, "telemetri: false\n")
    message = str(error.value)
    assert "config.yaml: unknown setting 'telemetri'; did you mean 'telemetry'?" in message
    assert "request-logs" in message  # and the whole list


def test_a_setting_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=r"port: expected int, got 'eighty'"):
        settings_from(tmp_path, "port: eighty\n")


def test_each_value_says_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text(
        "port: 9000\nvenv-cache: /srv/venvs\nautoscaler:\n  stable-window: 30s\n"
    )
    monkeypatch.delenv("HOMERUN_VENV_CACHE", raising=False)
    loaded = load(tmp_path, listen="0.0.0.0", port=None)  # --listen given, --port not
    assert loaded.settings.port == 9000 and loaded.settings.listen == "0.0.0.0"
    assert loaded.origin("port") == CONFIG_FILE
    assert str(loaded.origin("listen")) == "flag --listen"
    assert loaded.origin("domain") == DEFAULT
    assert loaded.origin("autoscaler.stable-window") == CONFIG_FILE
    assert loaded.origin("autoscaler.max-scale") == DEFAULT
    effective = {setting.key: setting for setting in loaded.effective(tmp_path)}
    assert effective["venv-cache"].value == "/srv/venvs"
    assert effective["autoscaler.stable-window"].value == 30.0

    # The environment wins over config.yaml for the virtualenv cache, and says so.
    monkeypatch.setenv("HOMERUN_VENV_CACHE", str(tmp_path / "shared"))
    effective = {setting.key: setting for setting in load(tmp_path).effective(tmp_path)}
    assert effective["venv-cache"].value == str(tmp_path / "shared")
    assert str(effective["venv-cache"].origin) == "environment HOMERUN_VENV_CACHE"


def test_without_config_yaml_every_setting_is_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOMERUN_VENV_CACHE", raising=False)
    effective = load(tmp_path).effective(tmp_path)
    assert {setting.origin for setting in effective} == {DEFAULT}
    keys = [setting.key for setting in effective]
    assert keys[:2] == ["listen", "port"] and "autoscaler.tick-interval" in keys
    venv_cache = next(setting for setting in effective if setting.key == "venv-cache")
    assert venv_cache.value == str(tmp_path / "venvs")  # HOMERUN_HOME/venvs


def test_the_readme_example_is_a_valid_config_yaml(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    settings_section = readme.split("\n## Settings\n", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", settings_section, re.S)
    assert example is not None, "README.md's Settings section shows no config.yaml"
    settings = settings_from(tmp_path, example.group(1))
    assert settings.port == 9090 and settings.dashboard_port == 9091
    assert settings.autoscaler.stable_window == 30.0


def test_prices_override_the_cloud_run_table_and_say_where_from(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "prices:\n  date: '2027-01-01'\n  request-based:\n    per-vcpu-second: 0.00003\n"
    )
    loaded = load(tmp_path)
    prices = loaded.settings.prices
    assert prices.date == "2027-01-01" and prices.request_based.per_vcpu_second == 0.00003
    assert prices.request_based.free_requests == 2_000_000  # the rest as Cloud Run's
    assert loaded.origin("prices.request-based.per-vcpu-second") == CONFIG_FILE
    effective = {setting.key: setting for setting in loaded.effective(tmp_path)}
    assert effective["prices.instance-based.per-vcpu-second"].value == 0.000018
    assert effective["prices.instance-based.per-vcpu-second"].origin == DEFAULT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prices: cheap\n", "prices: expected a mapping"),
        ("prices:\n  request-based:\n    per-vcpu-second: -1\n", "request-based.per-vcpu-second"),
        ("prices:\n  per-request: 1\n", "per-request: unknown field"),
        ("inspector-block-ms: 5\n", "inspector-block-ms: expected 10 to 60000"),
    ],
)
def test_bad_prices_and_inspector_settings_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(message)):
        settings_from(tmp_path, text)


def test_the_sandbox_setting_is_one_of_auto_on_off(tmp_path: Path) -> None:
    assert settings_from(tmp_path, "").sandbox == "auto"  # the default: where bwrap works
    # A bare on/off is a bool to YAML 1.1: read as the words it was written as.
    assert settings_from(tmp_path, "sandbox: off\n").sandbox == "off"
    assert settings_from(tmp_path, "sandbox: on\n").sandbox == "on"
    assert settings_from(tmp_path, "sandbox: auto\n").sandbox == "auto"
    with pytest.raises(InvalidSpec, match=re.escape("sandbox: expected one of auto, on, off")):
        settings_from(tmp_path, "sandbox: yes-please\n")
