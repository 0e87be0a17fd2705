"""`homerun images push`: an image podman built, pushed to the registry its name names."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from homerun.errors import HomerunError
from homerun.model.engine import Engine
from homerun.model.images import ImageName

PUSH_SECONDS = 1800.0
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class PushFailed(HomerunError):
    """The registry did not take the image."""


def push_image(engine: Engine, image: str, name: ImageName) -> str:
    """Blocking: push the engine's image `image` (its ID) as `name` (registry/path:tag); the
    digest the registry knows it by (sha256:…), which a Knative Service or Cloud Run pins."""
    if not name.registry or name.registry == "localhost":
        raise PushFailed(
            f"{name.tagged} names no registry to push to; tag the image with one, e.g. "
            f"`homerun builds submit --tag REGISTRY_HOST[:PORT]/{name.path}`"
        )
    host = name.registry.rsplit(":", 1)[0] if name.registry.count(":") == 1 else name.registry
    # A registry on this machine's loopback speaks plain HTTP (Debian's docker-registry, a
    # test's); any other is reached with TLS verified.
    tls = "false" if host in _LOOPBACK_HOSTS else "true"
    with tempfile.TemporaryDirectory(prefix="homerun-push-") as folder:
        digest_file = Path(folder) / "digest"
        completed = subprocess.run(
            engine.command(
                "push",
                f"--tls-verify={tls}",
                "--digestfile",
                str(digest_file),
                image,
                f"docker://{name.tagged}",
            ),
            capture_output=True,
            text=True,
            timeout=PUSH_SECONDS,
            stdin=subprocess.DEVNULL,
        )
        if completed.returncode != 0:
            tail = "\n".join(completed.stderr.strip().splitlines()[-6:])
            raise PushFailed(
                f"{engine.name} could not push {name.tagged} (exit {completed.returncode}):\n"
                f"{tail}\nCheck that the registry {name.registry} runs and takes pushes."
            )
        digest = digest_file.read_text().strip()
    if not digest.startswith("sha256:"):
        raise PushFailed(f"{engine.name} pushed {name.tagged} but named no digest ({digest!r})")
    return digest
