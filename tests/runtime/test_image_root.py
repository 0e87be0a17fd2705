"""An image's instances in its own root folder (runtime/image_root.py): the command is read in
the image's files, links included, never the host's; and what keeps an image on the engine.
The folders here are built as an image's root is laid out (absolute links into the image, a
pip console script); the e2e suite runs a real image's (tests/e2e/test_container_zygote.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from homerun.model.engine import ContainerSpec
from homerun.model.volumes import Mounts, SecretFile
from homerun.runtime._zygote_command import PORT_MARK, ServerCommand, Unrecognised, recognise
from homerun.runtime.base import ImageRoot, InstanceSpec
from homerun.runtime.image_root import ImageConfig, rooted_spec

SEED_CMD = ("/bin/sh", "-c", "exec gunicorn --bind :$PORT --workers 1 main:app")
CONFIG = ImageConfig(
    cmd=SEED_CMD,
    env=(("PATH", "/usr/local/bin:/usr/bin:/bin"), ("LANG", "C.UTF-8")),
    workdir="/srv",
)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """An image's root: python3 an absolute link to /usr/bin/python3.11 (the image's, which
    the host may lack or have elsewhere), gunicorn a console script of it, a shell."""
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    python = root / "usr/bin/python3.11"
    python.write_text("an ELF file in a real image\n")
    python.chmod(0o755)
    (root / "usr/bin/python3").symlink_to("/usr/bin/python3.11")
    (root / "usr/bin/sh").write_text("")
    (root / "usr/bin/sh").chmod(0o755)
    gunicorn = root / "usr/local/bin/gunicorn"
    gunicorn.write_text("#!/usr/bin/python3\nfrom gunicorn.app.wsgiapp import run\nrun()\n")
    gunicorn.chmod(0o755)
    return root


def spec(**changes: object) -> InstanceSpec:
    fields: dict[str, object] = {
        "name": "svc-00001-abc-1",
        "argv": ["unused"],
        "env": {"PATH": "/host/bin", "HOME": "/root", "K_SERVICE": "svc", "PORT": "40001"},
        "cwd": Path("/unused"),
        "port": 40001,
        "revision": "svc-00001-abc",
    }
    fields.update(changes)
    return InstanceSpec(**fields)  # type: ignore[arg-type]


def test_the_command_is_found_in_the_image_root_not_on_the_host(image_root: Path) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin"}
    command = recognise(list(SEED_CMD), env, "/srv", image_root)
    assert isinstance(command, ServerCommand), command
    assert command.program == "/usr/local/bin/gunicorn"
    assert command.interpreter == "/usr/bin/python3"  # a path in the image
    assert command.args_for(8080) == ["--bind", ":8080", "--workers", "1", "main:app"]
    # The host's own lookups are not consulted: a program only the host has is not found.
    (image_root / "usr/local/bin/gunicorn").unlink()
    missing = recognise(list(SEED_CMD), env, "/srv", image_root)
    assert isinstance(missing, Unrecognised)
    assert missing.reason == "gunicorn is not found on the instance's PATH"


def test_a_link_out_of_the_image_is_followed_inside_it(image_root: Path) -> None:
    """/usr/bin/python3 -> /usr/bin/python3.11 means the image's; a link that climbs with ..
    stops at the image's `/`; a loop of links is no interpreter."""
    (image_root / "usr/bin/python3.11").unlink()
    env = {"PATH": "/usr/local/bin"}
    gone = recognise(["gunicorn", "main:app"], env, "/", image_root)
    assert isinstance(gone, Unrecognised)
    assert "not a Python console script" in gone.reason
    (image_root / "usr/bin/python3.11").symlink_to("../../../../../../usr/bin/python3.12")
    (image_root / "usr/bin/python3.12").write_text("")
    found = recognise(["gunicorn", "main:app"], env, "/", image_root)
    assert isinstance(found, ServerCommand), found
    os.unlink(image_root / "usr/bin/python3.12")
    (image_root / "usr/bin/python3.12").symlink_to("/usr/bin/python3.11")
    loop = recognise(["gunicorn", "main:app"], env, "/", image_root)
    assert isinstance(loop, Unrecognised)


def test_the_instance_runs_the_images_command_env_and_folder(image_root: Path) -> None:
    rooted = rooted_spec(spec(), ContainerSpec(image="sha256:ab"), CONFIG, image_root)
    assert isinstance(rooted, InstanceSpec), rooted
    assert rooted.argv == list(SEED_CMD)
    assert rooted.cwd == Path("/srv")
    assert rooted.container is None
    assert rooted.root == ImageRoot(folder=image_root, python="/usr/bin/python3")
    # The image's PATH and LANG; homerun's HOME stays where the image says none; the
    # instance's own variables (K_SERVICE, PORT) are kept.
    assert rooted.env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert rooted.env["LANG"] == "C.UTF-8"
    assert rooted.env["K_SERVICE"] == "svc" and rooted.env["PORT"] == "40001"


def test_command_and_args_replace_entrypoint_and_cmd_as_kubernetes_does(
    image_root: Path,
) -> None:
    config = ImageConfig(entrypoint=("/bin/sh", "-c"), cmd=("exec gunicorn -b :$PORT other:app",))
    args_only = ContainerSpec(image="sha256:ab", args=("exec gunicorn -b :$PORT main:app",))
    rooted = rooted_spec(spec(), args_only, config, image_root)
    assert isinstance(rooted, InstanceSpec)
    assert rooted.argv == ["/bin/sh", "-c", "exec gunicorn -b :$PORT main:app"]
    command_only = ContainerSpec(
        image="sha256:ab", command=("/bin/sh", "-c", "exec gunicorn -b :$PORT m:a")
    )
    rooted = rooted_spec(spec(), command_only, config, image_root)
    assert isinstance(rooted, InstanceSpec)
    assert rooted.argv == ["/bin/sh", "-c", "exec gunicorn -b :$PORT m:a"]  # CMD dropped


@pytest.mark.parametrize(
    ("changes", "container", "config", "reason"),
    [
        ({"port": 0}, {}, {}, "a job's task runs as a container of its image"),
        ({"mounts": Mounts(secret_files=(SecretFile("/secrets/key", b"k"),))}, {}, {},
         "its secret files and in-memory volumes are mounted by the engine"),
        ({}, {"port": 9090}, {}, "its container port is set (9090): PORT is that port"),
        ({}, {}, {"user": "app"}, "the image runs as user app, which the engine gives it"),
        ({}, {"user": "1000"}, {}, "the image runs as user 1000, which the engine gives it"),
        ({}, {"allow_privilege_escalation": True}, {},
         "its securityContext allows privilege escalation, which the engine allows"),
        ({}, {"allow_privilege_escalation": False}, {"cmd": ()}, "the image has no command"),
        ({}, {"read_only": True}, {},
         "its securityContext asks for a read-only root filesystem, which the engine gives"),
        ({}, {"cap_add": ("NET_BIND_SERVICE",)}, {},
         "its securityContext adds a capability, which the engine gives"),
        ({}, {"seccomp_profile": "RuntimeDefault"}, {},
         "its securityContext asks for the default seccomp profile, which the engine applies"),
        ({}, {}, {"cmd": ("gunicorn", "--bind", ":8080", "main:app")},
         "its command does not say $PORT"),
        ({}, {}, {"cmd": ("/bin/sh", "-c", "python main.py")},
         "a zygote cannot run its command: `python main.py` does not start gunicorn or uvicorn"),
        ({}, {}, {"cmd": ()}, "the image has no command"),
    ],
)  # fmt: skip
def test_what_keeps_an_image_on_the_engine_and_why(
    image_root: Path,
    changes: dict[str, object],
    container: dict[str, Any],
    config: dict[str, Any],
    reason: str,
) -> None:
    image_config = dataclasses.replace(CONFIG, **config)
    said = rooted_spec(
        spec(**changes),
        ContainerSpec(image="sha256:ab", **container),
        image_config,
        image_root,
    )
    assert isinstance(said, str) and said.startswith(reason), said


def test_the_port_mark_is_what_each_instance_listens_on(image_root: Path) -> None:
    command = recognise(list(SEED_CMD), {"PATH": "/usr/local/bin"}, "/srv", image_root)
    assert isinstance(command, ServerCommand)
    assert any(PORT_MARK in argument for argument in command.args)


def test_image_config_from_the_engine() -> None:
    config = ImageConfig.parse(
        {
            "Env": ["PATH=/usr/local/bin:/usr/bin", "EMPTY=", "EQ=a=b"],
            "Cmd": ["python3", "main.py"],
            "WorkingDir": "/app",
            "User": "app",
        }
    )
    assert config.env == (("PATH", "/usr/local/bin:/usr/bin"), ("EMPTY", ""), ("EQ", "a=b"))
    assert config.entrypoint == () and config.cmd == ("python3", "main.py")
    assert (config.workdir, config.user) == ("/app", "app")
    assert ImageConfig.parse({"Entrypoint": None, "Cmd": None}) == ImageConfig()
