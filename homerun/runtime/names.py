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
