"""A sandboxed pip finds its index as the daemon's pip would, and gets nothing else."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from homerun.build.pip_settings import read_settings


def _config(text: str | None) -> dict[str, dict[str, str]]:
    assert text is not None
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return {section: dict(parser.items(section)) for section in parser.sections()}


def test_only_the_variables_pip_needs_pass(tmp_path: Path) -> None:
    environ = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PIP_INDEX_URL": "https://pypi.example/simple",
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "HTTPS_PROXY": "http://proxy:3128",
        "HOMERUN_TOKEN": "secret",
        "HOMERUN_HOME": "/root/.homerun",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "PIP_TARGET": "/usr/lib/python3/dist-packages",
        "PIP_LOG": "/root/pip.log",
        "PYTHONPATH": "/root/lib",
    }
    settings = read_settings(environ, hidden=[tmp_path], never=[])
    assert settings.environment == {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PIP_INDEX_URL": "https://pypi.example/simple",
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    assert settings.config is None


def test_the_users_pip_conf_files_are_merged_as_pip_reads_them(tmp_path: Path) -> None:
    (tmp_path / ".pip").mkdir()
    (tmp_path / ".pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://old.example/simple\ntimeout = 60\n"
    )
    (tmp_path / ".config" / "pip").mkdir(parents=True)
    (tmp_path / ".config" / "pip" / "pip.conf").write_text(
        "[global]\nindex-url = https://new.example/simple\n[install]\npre = true\n"
    )
    settings = read_settings({"HOME": str(tmp_path)}, hidden=[tmp_path], never=[])
    assert _config(settings.config) == {
        "global": {"index-url": "https://new.example/simple", "timeout": "60"},
        "install": {"pre": "true"},
    }


def test_pip_config_file_replaces_the_users_files(tmp_path: Path) -> None:
    (tmp_path / ".config" / "pip").mkdir(parents=True)
    (tmp_path / ".config" / "pip" / "pip.conf").write_text("[global]\ntimeout = 1\n")
    named = tmp_path / "chosen.conf"
    named.write_text("[global]\ntimeout = 2\n")
    environ = {"HOME": str(tmp_path), "PIP_CONFIG_FILE": str(named)}
    assert _config(read_settings(environ, hidden=[], never=[]).config) == {
        "global": {"timeout": "2"}
    }
    quiet = read_settings(
        {"HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull}, hidden=[], never=[]
    )
    assert quiet.config is None and quiet.environment["PIP_CONFIG_FILE"] == os.devnull


def test_local_paths_the_settings_name_are_shown_unless_in_homerun_home(tmp_path: Path) -> None:
    home = tmp_path / "root"
    wheels = home / "wheels"
    wheels.mkdir(parents=True)
    ca = home / "ca.pem"
    ca.write_text("")
    homerun_home = home / ".homerun"
    (homerun_home / "index").mkdir(parents=True)
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text(
        f"[global]\nfind-links = {wheels}\n  https://example.com/links\n"
        f"extra-index-url = file://{homerun_home}/index\n"
    )
    environ = {"HOME": str(home), "PIP_CERT": str(ca), "SSL_CERT_DIR": "/etc/ssl/certs"}
    settings = read_settings(environ, hidden=[home], never=[homerun_home])
    assert sorted(settings.shown) == sorted([wheels, ca])
