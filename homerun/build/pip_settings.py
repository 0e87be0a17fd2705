"""What a sandboxed build's pip gets of the daemon's pip settings, and nothing else of its
environment.

pip finds its index, its certificates and its proxy in its configuration files (the global
ones, /etc/pip.conf and /etc/xdg/pip/pip.conf, on the read-only system the sandbox shows; the
user's, ~/.pip/pip.conf and ~/.config/pip/pip.conf, in the daemon user's home, which it
hides) and in the environment (PIP_INDEX_URL, PIP_CERT, SSL_CERT_FILE, HTTPS_PROXY...). The
sandbox gets the variables of this list only (no HOMERUN_*, no token, no secret of the
daemon's), the user's files merged into one file pointed at by PIP_CONFIG_FILE, and the local
files and folders these settings name (a CA bundle, a --find-links folder) shown read-only
where the sandbox hides them. What pip is given to reach the index (credentials in an index
URL, a client certificate) the code it runs can read too: give builds an index that needs none,
or one whose credentials only read.
"""

from __future__ import annotations

import configparser
import io
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# pip's own variables that say where packages come from, how to reach them, and how to choose.
_PIP_VARIABLES = frozenset(
    f"PIP_{name}"
    for name in (
        "INDEX_URL",
        "EXTRA_INDEX_URL",
        "NO_INDEX",
        "FIND_LINKS",
        "TRUSTED_HOST",
        "CERT",
        "CLIENT_CERT",
        "PROXY",
        "TIMEOUT",
        "DEFAULT_TIMEOUT",
        "RETRIES",
        "KEYRING_PROVIDER",
        "CONSTRAINT",
        "PRE",
        "ONLY_BINARY",
        "NO_BINARY",
        "PREFER_BINARY",
        "DISABLE_PIP_VERSION_CHECK",
        "NO_COLOR",
        "USE_FEATURE",
        "USE_DEPRECATED",
        "NO_BUILD_ISOLATION",
        "VERBOSE",
        "QUIET",
    )
)
# Others: the locale, the programs' PATH, where global pip.conf files are (XDG_CONFIG_DIRS),
# proxies and certificate bundles, and what compilers of an sdist read.
_VARIABLES = _PIP_VARIABLES | {
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "XDG_CONFIG_DIRS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    *(f"{name}_proxy" for name in ("http", "https", "all", "no")),
    *(f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "NO")),
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "PKG_CONFIG_PATH",
}
# Settings whose values are local paths or URLs that may be file: URLs.
_PATH_KEYS = frozenset(
    {"cert", "client-cert", "find-links", "index-url", "extra-index-url", "constraint"}
)
_PATH_VARIABLES = {
    *(f"PIP_{key.upper().replace('-', '_')}" for key in _PATH_KEYS),
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
}


@dataclass(frozen=True)
class PipSettings:
    environment: dict[str, str]  # the variables pip runs with, PIP_CONFIG_FILE's file apart
    config: str | None  # the daemon user's pip configuration, for PIP_CONFIG_FILE; None: none
    shown: tuple[Path, ...]  # local paths the settings name that the sandbox would hide


def read_settings(
    environ: Mapping[str, str], *, hidden: Iterable[Path], never: Iterable[Path]
) -> PipSettings:
    """The daemon's pip settings (`environ`, its user's pip.conf) for a sandboxed pip, whose
    view hides `hidden`: the paths they name under those are shown, unless they hold or are
    under one of `never` (HOMERUN_HOME)."""
    environment = {name: value for name, value in environ.items() if name in _VARIABLES}
    config: str | None = None
    named = environ.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        environment["PIP_CONFIG_FILE"] = os.devnull  # pip reads no configuration file at all
    elif named and Path(named).is_file():
        config = _merged([Path(named)])  # pip then reads no user file
    else:
        config = _merged(_user_files(environ))
    values = [environ[name] for name in _PATH_VARIABLES if name in environ]
    values += _path_values(config)
    hidden, never = [*hidden], [*never]
    shown = []
    for path in _local_paths(values):
        if not path.exists() or not any(path.is_relative_to(folder) for folder in hidden):
            continue
        real = Path(os.path.realpath(path))
        if any(
            candidate.is_relative_to(folder) or folder.is_relative_to(candidate)
            for candidate in (path, real)
            for folder in never
        ):
            continue
        shown.append(path)
    return PipSettings(environment, config, tuple(dict.fromkeys(shown)))


def _user_files(environ: Mapping[str, str]) -> list[Path]:
    """The user's pip.conf files, in the order pip reads them (the later wins)."""
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]


def _merged(files: list[Path]) -> str | None:
    parser = configparser.RawConfigParser()
    read = parser.read([str(path) for path in files if path.is_file()], encoding="utf-8")
    if not read:
        return None
    text = io.StringIO()
    parser.write(text)
    return text.getvalue()


def _path_values(config: str | None) -> list[str]:
    if config is None:
        return []
    parser = configparser.RawConfigParser()
    parser.read_string(config)
    return [
        value
        for section in parser.sections()
        for key, value in parser.items(section)
        if key.replace("_", "-") in _PATH_KEYS
    ]


def _local_paths(values: Iterable[str]) -> list[Path]:
    """The absolute local paths among whitespace-separated paths and URLs."""
    paths = []
    for value in values:
        for word in value.split():
            if word.startswith("file:"):
                word = urllib.parse.unquote(urllib.parse.urlsplit(word).path)
            elif "://" in word:
                continue
            path = Path(os.path.expanduser(word))
            if path.is_absolute():
                paths.append(Path(os.path.normpath(path)))
    return paths
