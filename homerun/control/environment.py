"""The environment an instance of a revision starts with."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from homerun.errors import InvalidSpec
from homerun.model.artifact import ArtifactRecord
from homerun.model.engine import DEFAULT_CONTAINER_PORT, ContainerSpec
from homerun.model.run_as import RunAs
from homerun.routing.types import Address
from homerun.runtime.inspection import Inspector
from homerun.runtime.names import INHERITED, resolving_env
from homerun.spec import RevisionSpec

# What an instance inherits from the daemon, as a container inherits its image's settings.


def container_spec(
    spec: RevisionSpec, artifact: ArtifactRecord | None, user: RunAs | None = None
) -> ContainerSpec | None:
    """How the revision's instances run as containers, when its artifact is an engine's image:
    --port is the container's port, --memory and --cpu its limits, --command/--args replace
    the image's ENTRYPOINT/CMD (Kubernetes semantics), --user securityContext's user, and its
    privileges (checked by control/users.py)."""
    if artifact is None or artifact.engine_image is None:
        return None
    return ContainerSpec(
        image=artifact.engine_image,
        port=spec.container_port or DEFAULT_CONTAINER_PORT,
        command=tuple(spec.command) if spec.command else None,
        args=tuple(spec.args) if spec.args else None,
        memory=spec.memory,
        cpu=spec.cpu,
        user=user.engine_user() if user is not None else None,
        workdir=spec.working_dir,
        allow_privilege_escalation=spec.allow_privilege_escalation,
        read_only=bool(spec.read_only_root_filesystem),
        cap_drop=tuple(spec.capabilities_drop),
        cap_add=tuple(spec.capabilities_add),
        seccomp_profile=spec.seccomp_profile,
    )


def effective_entrypoint(artifact: ArtifactRecord, spec: RevisionSpec) -> tuple[list[str], str]:
    """What a revision's instances run, and where it comes from. A source build takes
    --command and --args into its artifact; a container takes them over its image's, as
    Kubernetes does: a command replaces the ENTRYPOINT and the CMD, args alone the CMD."""
    if artifact.engine_image is None or not (spec.command or spec.args):
        return artifact.argv, artifact.entrypoint_origin
    given = " and --args" if spec.command and spec.args else ""
    if spec.command:
        origin = f"--command{given}, in place of the image's ENTRYPOINT and CMD"
        return [*spec.command, *(spec.args or [])], origin
    args = list(spec.args or [])
    entrypoint = artifact.image_entrypoint
    if entrypoint is None:  # an image recorded before its ENTRYPOINT was kept
        return args, "--args, after the image's ENTRYPOINT, in place of its CMD"
    if not entrypoint:
        return args, "--args in place of the image's CMD (no ENTRYPOINT: they are the command)"
    return [*entrypoint, *args], "the image's ENTRYPOINT, then --args in place of its CMD"


def instance_env(
    *,
    service: str,
    revision: str,
    spec: RevisionSpec,
    artifact: ArtifactRecord | None,
    secrets: Mapping[str, str],
    host_env: Mapping[str, str],
    metadata_address: Address | None,
    hosts_file: Path | None = None,
    inspector: Inspector | None = None,
) -> dict[str, str]:
    """Later sources win: the host's basics, the image's ENV, the user's env vars, the secrets
    (values read now), then what Cloud Run sets itself (K_SERVICE...); PORT is per instance."""
    env = {key: host_env[key] for key in INHERITED if key in host_env}
    if artifact is None or artifact.engine_image is None:
        env.setdefault("PYTHONUNBUFFERED", "1")  # prints reach the log as they happen
    if artifact is not None:
        env.update(artifact.env)
    env.update(spec.env)
    env.update(secrets)
    env.update(K_SERVICE=service, K_REVISION=revision, K_CONFIGURATION=service)
    if hosts_file is not None:
        # Service hosts (renderer.localhost) resolve to the router in the instance's Python,
        # which glibc does not do for names under localhost (runtime/_site/sitecustomize.py).
        env.update(resolving_env(env, hosts_file))
    if inspector is not None:
        env.update(inspector.env(revision, env))
    if metadata_address is not None:
        env.update(metadata_env(metadata_address))
    return env


def metadata_env(metadata_address: Address) -> dict[str, str]:
    """Where an instance, a job's task or a worker pool's instance finds the metadata server
    (access/metadata.py), where Google's client libraries look for the project and the
    identity and tokens: google-auth (and Go's and Node's clients) read GCE_METADATA_HOST for
    its requests and GCE_METADATA_IP for the ping that tells them they run on Google, which
    otherwise go to metadata.google.internal and 169.254.169.254, names that reach nothing
    here."""
    host, port = metadata_address
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "HOMERUN_METADATA_URL": f"http://{address}/computeMetadata/v1",
        "GCE_METADATA_HOST": address,
        "GCE_METADATA_IP": address,
    }


# Where a source build without a Dockerfile has its code, as Google's buildpacks put it.
BUILDPACK_APP_DIR = PurePosixPath("/workspace")


def instance_cwd(
    revision_dir: Path, artifact: ArtifactRecord | None, working_dir: str | None
) -> Path:
    """The folder instances start in: the artifact's (its Dockerfile's WORKDIR), or the
    container's workingDir, a path in the image: under the artifact's rootfs/ when a Dockerfile
    built it, else under /workspace, which stands for the code's folder (app/)."""
    default = revision_dir / (artifact.cwd if artifact else ".")
    if working_dir is None or (artifact is not None and artifact.engine_image is not None):
        return default  # a container's workingDir is the engine's (ContainerSpec.workdir)
    path = PurePosixPath(working_dir)
    rootfs = revision_dir / "rootfs"
    if artifact is not None and PurePosixPath(artifact.cwd).parts[:1] == ("rootfs",):
        root, inside = rootfs, path.relative_to("/")
    elif path == BUILDPACK_APP_DIR or BUILDPACK_APP_DIR in path.parents:
        root, inside = revision_dir / "app", path.relative_to(BUILDPACK_APP_DIR)
    else:
        raise InvalidSpec(
            f"workingDir {working_dir}: without a Dockerfile the code is at "
            f"{BUILDPACK_APP_DIR} (as Google's buildpacks put it); give {BUILDPACK_APP_DIR} "
            "or a folder under it"
        )
    folder = (root / inside).resolve()
    if not folder.is_relative_to(root.resolve()) or not folder.is_dir():
        raise InvalidSpec(
            f"workingDir {working_dir}: no such folder in the image; it must be a folder of the "
            "deployed code (or one the Dockerfile makes)"
        )
    return folder
