"""Names in an instance's environment: the variables homerun passes on from its own, and how
an instance's Python resolves service hosts (`renderer.localhost`): the folder whose
sitecustomize.py an instance's PYTHONPATH starts with, and the variable naming the hosts file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

SITE_FOLDER = Path(__file__).with_name("_site")
HOSTS_VARIABLE = "HOMERUN_HOSTS"
# What an instance gets of homerun's own environment (an image's own value of one wins where
# the image's root is the instance's: runtime/image_root.py).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE")


def site_pythonpath(env: Mapping[str, str]) -> str:
    """`env`'s PYTHONPATH with SITE_FOLDER first, once (an app's own PYTHONPATH is kept after
    it). Its sitecustomize.py resolves service hosts and loads the runtime inspector's hooks."""
    path = str(SITE_FOLDER)
    given = [part for part in env.get("PYTHONPATH", "").split(":") if part and part != path]
    return ":".join([path, *given])


def resolving_env(env: Mapping[str, str], hosts_file: Path) -> dict[str, str]:
    """The variables to add to `env`: HOMERUN_HOSTS, and PYTHONPATH with SITE_FOLDER first."""
    return {HOSTS_VARIABLE: str(hosts_file), "PYTHONPATH": site_pythonpath(env)}


# Names the host's programs homerun runs as root for an instance (env, bwrap, setpriv and
# nsenter; podman, its conmon and runc) act on in their own environment: the dynamic loader
# and libc (glibc's "unsecure" variables, which it ignores in setuid programs: LD_PRELOAD,
# GCONV_PATH...), Go's runtime (podman), the containers libraries (another config, storage,
# hooks), and where programs are found. An instance's variables come from its Dockerfile, its
# image or its deploy: these names never reach those programs' environment (host_split); the
# app gets them on a command line once it runs as its own user (so their values are in `ps`).
_HOST_NAMES = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOME",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "NIS_PATH",
        "NLSPATH",
        "NOTIFY_SOCKET",
        "PATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
    }
)
_HOST_PREFIXES = (
    "LD_",
    "MALLOC_",
    "GO",
    "CONTAINERS_",
    "_CONTAINERS_",
    "CONTAINER_",
    "PODMAN_",
    "BUILDAH_",
    "STORAGE_",
    "REGISTRIES_",
    "XDG_",
    "DOCKER_",
)


def host_split(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """`env` as two: what a host program run as root may have in its environment, and what
    it may not (the names above), to be set only once the app runs as its own user."""
    kept: dict[str, str] = {}
    acted_on: dict[str, str] = {}
    for name, value in env.items():
        host = name in _HOST_NAMES or name.startswith(_HOST_PREFIXES)
        (acted_on if host else kept)[name] = value
    return kept, acted_on
