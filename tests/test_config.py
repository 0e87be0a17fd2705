"""config.yaml: what it sets, and the errors for what it cannot mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.config import load_settings
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
