"""Platform settings: defaults, HOMERUN_HOME/config.yaml and the environment; no I/O on creation."""

from __future__ import annotations

import difflib
import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from homerun.errors import InvalidSpec
from homerun.scaling.policy import AutoscalerConfig, load_autoscaler_config

MiB = 1024 * 1024


def default_home() -> Path:
    return Path(os.environ.get("HOMERUN_HOME") or Path.home() / ".homerun").expanduser().resolve()


@dataclass(frozen=True)
class Paths:
    """Where everything lives under HOMERUN_HOME."""

    home: Path
    venv_cache: Path

    @property
    def database(self) -> Path:
        return self.home / "homerun.db"

    @property
    def admin_socket(self) -> Path:
        return self.home / "admin.sock"

    @property
    def lock_file(self) -> Path:
        return self.home / "daemon.lock"

    @property
    def pid_file(self) -> Path:
        return self.home / "daemon.pid"

    @property
    def daemon_log(self) -> Path:
        return self.home / "daemon.log"

    @property
    def revisions(self) -> Path:
        return self.home / "revisions"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def config_file(self) -> Path:
        return self.home / "config.yaml"

    @property
    def secrets(self) -> Path:
        return self.home / "secrets"

    @property
    def signing_key(self) -> Path:
        return self.home / "signing-key"

    @property
    def admin_token(self) -> Path:
        return self.home / "admin-token"


@dataclass(frozen=True)
class Settings:
    """Platform-wide settings. Every number is a setting with Cloud Run's or Knative's default."""

    listen: str = "127.0.0.1"
    port: int = 8080
    domain: str = "localhost"
    max_request_body_bytes: int = 32 * MiB
    header_timeout_seconds: float = 10.0  # to send a request's line and headers (slowloris)
    keepalive_timeout_seconds: float = 75.0  # an idle client connection stays open (nginx's)
    # Knative probes a starting instance every 50-200 ms; a TCP connect is cheap, so start fast.
    probe_interval_seconds: float = 0.05
    stop_grace_seconds: float = 10.0
    # How long a deploy watches its first instance after the probe before moving traffic.
    deploy_settle_seconds: float = 1.0
    # The dashboard and /metrics; when the port is taken, an ephemeral one (status says which).
    dashboard_listen: str = "127.0.0.1"
    dashboard_port: int = 8081
    # HOST:PORT of the TCP admin listener (needs the admin token); empty: the Unix socket only.
    admin_listen: str = ""
    # Request records feed metrics and the dashboard; request_logs also writes them as logs.
    telemetry: bool = True
    request_logs: bool = True
    log_max_bytes: int = 64 * MiB
    max_source_bytes: int = 512 * MiB  # a bigger source folder is refused (see .gcloudignore)
    venv_cache: str = ""  # empty: HOMERUN_HOME/venvs (HOMERUN_VENV_CACHE overrides)
    # Revisions that serve nothing are kept up to this many per service, newest first; older
    # ones are deleted with their artifacts (Knative keeps 20, Cloud Run up to 1000).
    revision_retention: int = 20
    # Fork instances from a per-revision zygote that has imported the app (runtime/zygote.py);
    # off: every instance is spawned (the reference the cold-start benchmark compares with).
    zygote: bool = True
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)

    def paths(self, home: Path) -> Paths:
        cache = os.environ.get("HOMERUN_VENV_CACHE") or self.venv_cache
        return Paths(home=home, venv_cache=Path(cache).expanduser() if cache else home / "venvs")


_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
    "bool": bool,
}

_KEYS = {
    "listen": "listen",
    "port": "port",
    "domain": "domain",
    "max-request-body-bytes": "max_request_body_bytes",
    "header-timeout-seconds": "header_timeout_seconds",
    "keepalive-timeout-seconds": "keepalive_timeout_seconds",
    "stop-grace-seconds": "stop_grace_seconds",
    "deploy-settle-seconds": "deploy_settle_seconds",
    "dashboard-listen": "dashboard_listen",
    "dashboard-port": "dashboard_port",
    "admin-listen": "admin_listen",
    "telemetry": "telemetry",
    "request-logs": "request_logs",
    "log-max-bytes": "log_max_bytes",
    "max-source-bytes": "max_source_bytes",
    "venv-cache": "venv_cache",
    "revision-retention": "revision_retention",
    "zygote": "zygote",
}


def load_settings(home: Path, **overrides: Any) -> Settings:
    """Read HOMERUN_HOME/config.yaml (if any) and apply command-line overrides on top."""
    settings = Settings()
    config_file = home / "config.yaml"
    if config_file.exists():
        try:
            raw = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidSpec(f"{config_file}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise InvalidSpec(f"{config_file}: expected a mapping of settings at the top level")
        known: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(Settings)}
        for key, value in raw.items():
            if key == "autoscaler":
                known["autoscaler"] = load_autoscaler_config(value, f"{config_file}: autoscaler")
                continue
            name = _KEYS.get(str(key))
            if name is None:
                # A misspelled setting would otherwise leave the default in force, silently.
                settings_names = [*_KEYS, "autoscaler"]
                close = difflib.get_close_matches(str(key), settings_names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise InvalidSpec(
                    f"{config_file}: unknown setting {key!r}; {hint}"
                    f"the settings are {', '.join(sorted(settings_names))}"
                )
            expected = _TYPES[str(types[name])]
            bool_for_number = isinstance(value, bool) and expected is not bool
            if not isinstance(value, expected) or bool_for_number:
                raise InvalidSpec(f"{config_file}: {key}: expected {types[name]}, got {value!r}")
            known[name] = value
        if known.get("admin_listen"):
            split_address(known["admin_listen"], f"{config_file}: admin-listen")
        settings = replace(settings, **known)
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def split_address(text: str, where: str) -> tuple[str, int]:
    """`127.0.0.1:9090` or `[::1]:9090` -> (host, port)."""
    host, separator, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidSpec(f"{where}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9090)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
