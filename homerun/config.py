"""Platform settings: defaults, HOMERUN_HOME/config.yaml, the environment and flags, and which
of them each value came from; no I/O on creation."""

from __future__ import annotations

import difflib
import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from homerun.access.project import DEFAULT_PROJECT, check_project_id
from homerun.errors import InvalidSpec
from homerun.model.cost import DEFAULT_PRICES, PriceTable
from homerun.model.validation import validation_message
from homerun.scaling.policy import AutoscalerConfig, load_autoscaler_config

MiB = 1024 * 1024
HOME_VARIABLE = "HOMERUN_HOME"
VENV_CACHE_VARIABLE = "HOMERUN_VENV_CACHE"  # wins over config.yaml's venv-cache


def default_home() -> Path:
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / ".homerun").expanduser().resolve()


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
    def hosts(self) -> Path:
        """Every service host -> the router, in /etc/hosts form (routing/hosts.py). In a folder
        of its own, holding nothing else, so that a sandbox can show it to instances (a bind
        mount of the folder sees each new file renamed into it; one of the file would not)."""
        return self.home / "network" / "hosts"

    @property
    def revisions(self) -> Path:
        return self.home / "revisions"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def inspections(self) -> Path:
        return self.home / "inspect"

    @property
    def images(self) -> Path:
        return self.home / "images"

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

    @property
    def tls(self) -> Path:
        """The local certificate authority and what it issued (HTTPS without tls-cert-file)."""
        return self.home / "tls"


@dataclass(frozen=True)
class Settings:
    """Platform-wide settings. Every number is a setting with Cloud Run's or Knative's default."""

    listen: str = "127.0.0.1"
    port: int = 8080
    domain: str = "localhost"
    # The HTTPS port (0: none), HTTP/2 and HTTP/1.1 by ALPN, on the same address as `listen`.
    # Without a certificate and key, the local authority in HOMERUN_HOME/tls issues them.
    https_port: int = 0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # A folder of NAME.crt + NAME.key pairs for several domains, chosen by SNI.
    tls_certificates_dir: str = ""
    max_request_body_bytes: int = 32 * MiB
    header_timeout_seconds: float = 10.0  # to send a request's line and headers (slowloris)
    keepalive_timeout_seconds: float = 75.0  # an idle client connection stays open (nginx's)
    # A request body may pause this long between two reads (nginx's client_body_timeout) and
    # must come at this rate on top of it (Apache's MinRate): N bytes get 60 s + N / 500 s.
    request_body_timeout_seconds: float = 60.0
    request_body_min_bytes_per_second: float = 500.0
    # Bodies up to this size are read whole before the request takes an instance's slot.
    request_body_buffer_bytes: int = 1 * MiB
    # A client that takes none of its response for this long is cut off (nginx's send_timeout).
    send_timeout_seconds: float = 60.0
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
    # Zygotes of revisions with no instance running are stopped, least recently used first,
    # while their memory (PSS) is over this. A revision's zygote is forked from the base of its
    # virtualenv and costs some 7 MB of its own (the base 15-40 MB, shared); the first request
    # to a revision whose zygote was stopped forks a new one from the base, in tens of ms.
    zygote_memory_budget_bytes: int = 128 * MiB
    # Each revision's processes in a sandbox (runtime/sandbox.py, bubblewrap): auto (where
    # bwrap and the namespaces it needs work; homerun says so at start when they do not), on
    # (refuse to start without it), off (instances run as homerun's user and see its files).
    sandbox: str = "auto"
    # The runtime inspector inside Python instances (runtime/inspection.py): event-loop lag,
    # blocking calls in coroutines (a stall past inspector-block-ms is sampled), thread-pool
    # use and the server's workers x threads, for describe and `homerun services advise`.
    inspector: bool = True
    inspector_block_ms: float = 100.0
    # Builds Dockerfiles outside the engine-less subset and runs the images: auto (podman
    # when installed), podman, or none.
    container_engine: str = "auto"
    # An image whose command runs gunicorn or uvicorn on $PORT: its instances forked from a
    # zygote in the image's own root folder (runtime/image_root.py; as root, with the sandbox
    # and its network namespaces) rather than each a `podman run`.
    container_zygote: bool = True
    # The Google Cloud project instances are told they run in (the metadata server's
    # project-id; service accounts are NAME@PROJECT.iam.gserviceaccount.com).
    project: str = DEFAULT_PROJECT
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    # What describe, the dashboard and `services advise` price usage with (config.yaml's
    # `prices:` overrides any of it: date, source, request-based, instance-based).
    prices: PriceTable = DEFAULT_PRICES

    def paths(self, home: Path) -> Paths:
        cache = os.environ.get(VENV_CACHE_VARIABLE) or self.venv_cache
        return Paths(home=home, venv_cache=Path(cache).expanduser() if cache else home / "venvs")


_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "str": str,
    "bool": bool,
}

SANDBOX_SETTINGS = ("auto", "on", "off")  # runtime/sandbox.py's
AUTOSCALER = "autoscaler"  # a nested mapping: Knative's config-autoscaler keys
PRICES = "prices"  # Cloud Run's price table (model/cost.py), for the cost homerun estimates
_KEYS = {
    "listen": "listen",
    "port": "port",
    "domain": "domain",
    "https-port": "https_port",
    "tls-cert-file": "tls_cert_file",
    "tls-key-file": "tls_key_file",
    "tls-certificates-dir": "tls_certificates_dir",
    "max-request-body-bytes": "max_request_body_bytes",
    "header-timeout-seconds": "header_timeout_seconds",
    "keepalive-timeout-seconds": "keepalive_timeout_seconds",
    "request-body-timeout-seconds": "request_body_timeout_seconds",
    "request-body-min-bytes-per-second": "request_body_min_bytes_per_second",
    "request-body-buffer-bytes": "request_body_buffer_bytes",
    "send-timeout-seconds": "send_timeout_seconds",
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
    "zygote-memory-budget-bytes": "zygote_memory_budget_bytes",
    "sandbox": "sandbox",
    "inspector": "inspector",
    "inspector-block-ms": "inspector_block_ms",
    "container-engine": "container_engine",
    "container-zygote": "container_zygote",
    "project": "project",
}


@dataclass(frozen=True)
class Origin:
    """Where a setting's value came from: `default`, `config.yaml`, `environment NAME` or
    `flag --NAME`."""

    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.name else self.kind


DEFAULT = Origin("default")
CONFIG_FILE = Origin("config.yaml")


@dataclass(frozen=True)
class Setting:
    """One effective setting, keyed as config.yaml spells it (`port`, `autoscaler.max-scale`)."""

    key: str
    value: Any
    origin: Origin


@dataclass(frozen=True)
class LoadedSettings:
    """Settings with the origin of every value that is not its default."""

    settings: Settings
    config_file: Path
    origins: dict[str, Origin]  # by config.yaml key; a key not here has its default

    def origin(self, key: str) -> Origin:
        return self.origins.get(key, DEFAULT)

    def effective(self, home: Path) -> list[Setting]:
        """Every setting config.yaml takes, in its order, with its value and origin; venv-cache
        as the folder in use (HOMERUN_VENV_CACHE, else config.yaml's, else HOMERUN_HOME/venvs)."""
        found = []
        for key, name in _KEYS.items():
            value = getattr(self.settings, name)
            if name == "venv_cache":
                value = str(self.settings.paths(home).venv_cache)
            found.append(Setting(key, value, self.origin(key)))
        for each in fields(AutoscalerConfig):
            key = f"{AUTOSCALER}.{_key(each.name)}"
            found.append(
                Setting(key, getattr(self.settings.autoscaler, each.name), self.origin(key))
            )
        for name, value in _flat(self.settings.prices.model_dump()).items():
            key = f"{PRICES}.{name}"
            found.append(Setting(key, value, self.origin(key)))
        return found


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"request_based": {"per_vcpu_second": 1}} -> {"request-based.per-vcpu-second": 1}."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{_key(str(key))}" if prefix else _key(str(key))
        flat.update(_flat(item, name))
    return flat


def load_prices(value: Any, where: str) -> PriceTable:
    """config.yaml's `prices:` over the default table; InvalidSpec says what is wrong."""
    if not isinstance(value, dict):
        raise InvalidSpec(
            f"{where}: expected a mapping (date, source, request-based, instance-based), "
            f"got {value!r}"
        )

    def snake(item: Any) -> Any:
        if isinstance(item, dict):
            return {str(key).replace("-", "_"): snake(inner) for key, inner in item.items()}
        return item

    merged = DEFAULT_PRICES.model_dump()
    for key, item in snake(value).items():
        if isinstance(item, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **item}
        else:
            merged[key] = item
    try:
        return PriceTable.model_validate(merged)
    except ValidationError as error:
        # config.yaml spells the keys with dashes (request-based.per-vcpu-second).
        raise InvalidSpec(f"{where}: {validation_message(error).replace('_', '-')}") from None


def home_origin() -> Origin:
    return Origin("environment", HOME_VARIABLE) if os.environ.get(HOME_VARIABLE) else DEFAULT


def load_settings(home: Path, **overrides: Any) -> Settings:
    """Read HOMERUN_HOME/config.yaml (if any) and apply command-line overrides on top."""
    return load(home, **overrides).settings


def load(home: Path, **overrides: Any) -> LoadedSettings:
    """`load_settings`, saying where each value came from. `overrides` are flags by field name
    (`port=9000` is `--port`); None means the flag was not given."""
    settings = Settings()
    origins: dict[str, Origin] = {}
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
            if key == PRICES:
                known["prices"] = load_prices(value, f"{config_file}: prices")
                origins.update({f"{PRICES}.{name}": CONFIG_FILE for name in _flat(value)})
                continue
            if key == AUTOSCALER:
                known["autoscaler"] = load_autoscaler_config(value, f"{config_file}: autoscaler")
                # load_autoscaler_config refused any key that is not a field's.
                origins.update({f"{AUTOSCALER}.{name}": CONFIG_FILE for name in value or {}})
                continue
            name = _KEYS.get(str(key))
            if name is None:
                # A misspelled setting would otherwise leave the default in force, silently.
                settings_names = [*_KEYS, AUTOSCALER, PRICES]
                close = difflib.get_close_matches(str(key), settings_names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise InvalidSpec(
                    f"{config_file}: unknown setting {key!r}; {hint}"
                    f"the settings are {', '.join(sorted(settings_names))}"
                )
            if name == "sandbox" and isinstance(value, bool):
                value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a bool
            expected = _TYPES[str(types[name])]
            bool_for_number = isinstance(value, bool) and expected is not bool
            if not isinstance(value, expected) or bool_for_number:
                raise InvalidSpec(f"{config_file}: {key}: expected {types[name]}, got {value!r}")
            known[name] = value
            origins[str(key)] = CONFIG_FILE
        if "project" in known:
            check_project_id(known["project"], f"{config_file}: project")
        if known.get("zygote_memory_budget_bytes", 0) < 0:
            raise InvalidSpec(
                f"{config_file}: zygote-memory-budget-bytes: expected 0 or more, got "
                f"{known['zygote_memory_budget_bytes']} (0 keeps no zygote of an idle revision)"
            )
        if known.get("sandbox", "auto") not in SANDBOX_SETTINGS:
            raise InvalidSpec(
                f"{config_file}: sandbox: expected one of {', '.join(SANDBOX_SETTINGS)} "
                f"(auto: a sandbox where this machine can make one), got {known['sandbox']!r}"
            )
        if not 10 <= known.get("inspector_block_ms", 100.0) <= 60_000:
            raise InvalidSpec(
                f"{config_file}: inspector-block-ms: expected 10 to 60000 (milliseconds the "
                f"event loop may stall before the inspector samples it), got "
                f"{known['inspector_block_ms']}"
            )
        if known.get("admin_listen"):
            split_address(known["admin_listen"], f"{config_file}: admin-listen")
        if not 0 <= known.get("https_port", 0) <= 65535:
            raise InvalidSpec(
                f"{config_file}: https-port: expected a port from 1 to 65535 (0: no HTTPS), "
                f"got {known['https_port']}"
            )
        if bool(known.get("tls_cert_file")) != bool(known.get("tls_key_file")):
            named, missing = (
                ("tls-cert-file", "tls-key-file")
                if known.get("tls_cert_file")
                else ("tls-key-file", "tls-cert-file")
            )
            raise InvalidSpec(
                f"{config_file}: {named} is set but {missing} is not: give both (the PEM "
                "certificate chain and its private key), or neither for a certificate of the "
                "local authority in HOMERUN_HOME/tls"
            )
        settings = replace(settings, **known)
    if os.environ.get(VENV_CACHE_VARIABLE):
        origins["venv-cache"] = Origin("environment", VENV_CACHE_VARIABLE)
    given = {name: value for name, value in overrides.items() if value is not None}
    origins.update({_key(name): Origin("flag", "--" + _key(name)) for name in given})
    return LoadedSettings(replace(settings, **given), config_file, origins)


def _key(field_name: str) -> str:
    """config.yaml's spelling of a field: max_scale -> max-scale."""
    return field_name.replace("_", "-")


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
