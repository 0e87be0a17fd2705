"""The container engine homerun found (podman), and what an instance of an image needs from it:
values only, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CONTAINER_PORT = 8080  # Cloud Run's and Knative's containerPort
# Images homerun built are tagged here, so that `podman image prune` keeps them; the daemon
# untags those no revision or stored image uses any more. Each home has a repository of its
# own (`build_repository`): podman's storage is the machine's, and a daemon must not untag the
# images of another home's revisions.
BUILD_REPOSITORY = "localhost/homerun-build"


def build_repository(home_key: str) -> str:
    """The repository of one home's images: `localhost/homerun-build-KEY`."""
    return f"{BUILD_REPOSITORY}-{home_key}"


# What podman needs on a machine without systemd and with low hard limits (this project's
# machines): runc with plain cgroupfs, and ulimits below the hard ones (higher are refused).
PODMAN_GLOBAL_ARGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
PODMAN_RUN_ARGS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")


@dataclass(frozen=True)
class Engine:
    """A container engine command line: `program *global_args run *run_args …`."""

    name: str  # "podman"
    program: str  # its absolute path
    version: str
    global_args: tuple[str, ...] = PODMAN_GLOBAL_ARGS
    run_args: tuple[str, ...] = PODMAN_RUN_ARGS
    build_repository: str = BUILD_REPOSITORY  # where its builds are tagged: one per home

    def command(self, *arguments: str) -> list[str]:
        return [self.program, *self.global_args, *arguments]


@dataclass(frozen=True)
class ContainerSpec:
    """What runs a revision's instances as containers of one image."""

    image: str  # the engine's image ID (sha256:…)
    port: int = DEFAULT_CONTAINER_PORT  # the container's port; PORT inside it
    command: tuple[str, ...] | None = None  # replaces the image's ENTRYPOINT
    args: tuple[str, ...] | None = None  # replaces its CMD
    memory: str | None = None  # Kubernetes quantities: 512Mi, 1Gi
    cpu: str | None = None  # 1, 2, 500m
    user: str | None = None  # podman's --user (securityContext.runAsUser): UID or UID:GID
    # allowPrivilegeEscalation as given: False is no_new_privs; True keeps the instance off its
    # image's root folder, which is a sandbox, always no_new_privs (image_root.py).
    allow_privilege_escalation: bool | None = None
    read_only: bool = False  # readOnlyRootFilesystem: podman's --read-only (/tmp stays a tmpfs)
    # securityContext's capabilities.drop and .add: podman's --cap-drop and --cap-add.
    cap_drop: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    # seccompProfile.type: podman's default profile is RuntimeDefault (Unconfined is refused);
    # kept for the instance that would run in its image's root, unfiltered (image_root.py).
    seccomp_profile: str | None = None
    workdir: str | None = None  # the container's workingDir: podman's --workdir
    labels: dict[str, str] = field(default_factory=dict)
