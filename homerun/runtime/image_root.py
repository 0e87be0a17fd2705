"""A container image's instances forked from a zygote, without the engine at each start.

`podman run` costs some 500-900 ms before the app even starts. For a revision whose image
runs gunicorn or uvicorn on $PORT, homerun instead has the engine make one container of the
image (`podman create`, never started) and mount it (`podman mount`): that root folder, the
revision's own and writable as a container's is, becomes its sandbox's `/`
(runtime/sandbox.py), where a zygote imports the app once in the image's own Python and forks
each instance in its own control groups and the revision's network namespace, as for a
revision built without an engine. Only as root with the sandbox (config.yaml's
`container-zygote`); every other image, and every image it cannot follow exactly, runs as
`podman run` (runtime/container.py), and describe says why.

What differs from `podman run`: the app runs as the revision's own unprivileged user, not as
the image's root (an image that names a USER runs under the engine), PORT is each instance's
own port, as for a revision's processes, not 8080 (a revision with a container port set runs
under the engine), and instances of a revision share one root folder, /tmp included, as a
zygote's instances do.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from homerun.model.engine import DEFAULT_CONTAINER_PORT, ContainerSpec, Engine
from homerun.runtime._zygote_command import PORT_MARK, ServerCommand, recognise
from homerun.runtime.base import ImageRoot, InstanceSpec
from homerun.runtime.engine_call import engine_call
from homerun.runtime.names import INHERITED

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOT_USERS = ("", "root", "0", "0:0", "root:root")


@dataclass(frozen=True)
class ImageConfig:
    """What an image says about running it (the OCI config podman inspects)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ImageConfig:
        env = []
        for item in data.get("Env") or []:
            name, _, value = str(item).partition("=")
            env.append((name, value))
        return cls(
            entrypoint=tuple(str(word) for word in data.get("Entrypoint") or []),
            cmd=tuple(str(word) for word in data.get("Cmd") or []),
            env=tuple(env),
            workdir=str(data.get("WorkingDir") or ""),
            user=str(data.get("User") or ""),
        )


def why_not_rooted(spec: InstanceSpec, container: ContainerSpec, config: ImageConfig) -> str | None:
    """Why the instance runs as a container, said before its image's root is made; None when
    it may run there (its command is read there: rooted_spec)."""
    if spec.port == 0:
        return "a job's task runs as a container of its image"
    if spec.mounts:
        return "its secret files and in-memory volumes are mounted by the engine"
    if container.port != DEFAULT_CONTAINER_PORT:
        # PORT is then that port in every instance, and a zygote's instances share one
        # network: one port each, as a revision's processes are given.
        return f"its container port is set ({container.port}): PORT is that port in a container"
    user = container.user if container.user is not None else config.user
    if user not in ROOT_USERS:
        return f"the image runs as user {user}, which the engine gives it"
    # In its root folder, writable, an instance is sandboxed: no capability, no_new_privs, no
    # seccomp filter.
    if container.allow_privilege_escalation:
        return "its securityContext allows privilege escalation, which the engine allows"
    if container.read_only:
        return "its securityContext asks for a read-only root filesystem, which the engine gives"
    if container.cap_add:
        return "its securityContext adds a capability, which the engine gives"
    if container.seccomp_profile == "RuntimeDefault":
        return "its securityContext asks for the default seccomp profile, which the engine applies"
    return None


def rooted_spec(
    spec: InstanceSpec, container: ContainerSpec, config: ImageConfig, folder: Path
) -> InstanceSpec | str:
    """The instance as a process with the image's root folder as `/` (its command, its
    environment under the instance's, its working folder); or why it runs as a container."""
    why_not = why_not_rooted(spec, container, config)
    if why_not is not None:
        return why_not
    if container.command is not None:
        argv = [*container.command, *(container.args or ())]  # the image's CMD is dropped
    else:
        argv = [*config.entrypoint, *(container.args if container.args is not None else config.cmd)]
    if not argv:
        return "the image has no command"
    image_env = dict(config.env)
    env = {
        name: value
        for name, value in spec.env.items()
        if name not in INHERITED or name not in image_env  # the image's PATH, HOME...
    }
    env = {**image_env, **env}
    env["PATH"] = image_env.get("PATH", DEFAULT_PATH)
    cwd = container.workdir or config.workdir or "/"
    command = recognise(argv, env, cwd, folder)
    if not isinstance(command, ServerCommand):
        return f"a zygote cannot run its command: {command.reason}"
    if not any(PORT_MARK in argument for argument in command.args):
        return (
            "its command does not say $PORT (the zygote's instances share the revision's "
            "network, each on a port of its own)"
        )
    root = ImageRoot(folder=folder, python=command.interpreter)
    return replace(
        spec, argv=argv, env=env, cwd=Path(posixpath.normpath(cwd)), container=None, root=root
    )


class ImageRoots:
    """One mounted container of each revision's image, made at its first start and removed
    when the revision is forgotten; the images' configs, read once."""

    def __init__(self, engine: Engine, labels: Mapping[str, str]) -> None:
        self._engine = engine
        self._labels = dict(labels)
        self._folders: dict[str, asyncio.Future[Path]] = {}
        self._configs: dict[str, asyncio.Future[ImageConfig]] = {}

    def config(self, image: str) -> asyncio.Future[ImageConfig]:
        made = self._configs.get(image)
        if made is None or (made.done() and made.exception() is not None):
            made = self._configs[image] = asyncio.ensure_future(self._inspect(image))
        return made

    def folder(self, revision: str, image: str) -> asyncio.Future[Path]:
        made = self._folders.get(revision)
        if made is None or (made.done() and made.exception() is not None):
            made = self._folders[revision] = asyncio.ensure_future(self._mount(revision, image))
        return made

    def holds(self, revision: str) -> bool:
        return revision in self._folders

    async def release(self, revision: str) -> None:
        made = self._folders.pop(revision, None)
        if made is None:
            return
        try:
            await made
        except (OSError, asyncio.CancelledError):
            pass
        # rm --force unmounts it first.
        await engine_call(self._engine.command("rm", "--force", "--time", "0", _name(revision)))

    async def close(self) -> None:
        await asyncio.gather(*(self.release(revision) for revision in list(self._folders)))

    async def _inspect(self, image: str) -> ImageConfig:
        said = await engine_call(
            self._engine.command("image", "inspect", "--format", "{{json .Config}}", image)
        )
        data = json.loads(said or "{}")
        return ImageConfig.parse(data if isinstance(data, dict) else {})

    async def _mount(self, revision: str, image: str) -> Path:
        name = _name(revision)
        await engine_call(self._engine.command("rm", "--force", "--time", "0", name), check=False)
        labels = [
            part for key, value in self._labels.items() for part in ("--label", f"{key}={value}")
        ]
        await engine_call(
            # A command of its own: an image may have none (never run, never checked).
            self._engine.command(
                "create", "--name", name, *labels, "--pull", "never", image, "true"
            )
        )
        folder = Path((await engine_call(self._engine.command("mount", name))).strip())
        if not folder.is_absolute():
            raise OSError(f"{self._engine.name} mount {name} gave no folder ({folder})")
        return folder


def _name(revision: str) -> str:
    return f"homerun-root-{revision}"
