"""The user an instance runs as (securityContext's runAsUser, runAsGroup), and what the
process runtime can honour of a securityContext (the daemon says: ProcessUsers);
control/users.py decides."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class RunAs:
    """A user and group for an instance's processes. None: the runtime's own choice (the
    sandbox: the revision's own user, and a group of the user's id; a container: the image's
    USER, and the group /etc/passwd in the image gives that user)."""

    uid: int | None = None
    gid: int | None = None

    def engine_user(self) -> str:
        """podman's --user: UID or UID:GID."""
        return f"{self.uid}" if self.gid is None else f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class ProcessUsers:
    """What the process runtime can do about a securityContext: its user, its privileges."""

    honoured: bool  # the sandbox, with homerun as root: any user and group
    runs_as_root: bool  # an instance with no runAsUser runs as root (unsandboxed, as root)
    why_not: str = ""  # when not honoured: why, and what to do
    # Ids the sandbox keeps for itself: the revisions' own users and groups (a runAsUser among
    # them would be another revision's user, owning its files).
    reserved: range = range(0)
    # Sandboxed, an app holds no capability and runs with no_new_privs, without a seccomp
    # filter; unsandboxed, it holds what the daemon's user holds.
    sandboxed: bool = False
    # Whose the machine's ids are (the daemon gives a live lookup, runtime/sandbox.py): the
    # sandbox runs an app with the host's ids, so a runAsUser of one of them would read what
    # that user or group may read.
    host: IdOwners = field(default_factory=lambda: HostIds())


class IdOwners(Protocol):
    def owner(self, id_: int, *, group: bool) -> str | None:
        """Whose `id_` is on this machine, said for a refusal, or None when no one's."""


@dataclass(frozen=True)
class HostIds:
    """The users and groups of this machine, by id (its passwd and group databases), and the
    subordinate ranges its users hold for their containers (/etc/subuid, /etc/subgid)."""

    users: Mapping[int, str] = field(default_factory=dict)
    groups: Mapping[int, str] = field(default_factory=dict)
    subordinate_users: tuple[tuple[str, range], ...] = ()
    subordinate_groups: tuple[tuple[str, range], ...] = ()

    def owner(self, id_: int, *, group: bool) -> str | None:
        """Whose `id_` is, said for a refusal, or None when no one of this machine's."""
        named = (self.groups if group else self.users).get(id_)
        if named is not None:
            return f"the group {named}" if group else f"the user {named}"
        ranges = self.subordinate_groups if group else self.subordinate_users
        for user, ids in ranges:
            if id_ in ids:
                return f"in {user}'s subordinate range {ids.start}..{ids.stop - 1}"
        return None


def process_users(
    sandboxed: bool, privileged: bool, reserved: range = range(0), host: IdOwners | None = None
) -> ProcessUsers:
    """What the process runtime honours, from whether it sandboxes and homerun is root."""
    if sandboxed and privileged:
        return ProcessUsers(
            honoured=True,
            runs_as_root=False,
            reserved=reserved,
            sandboxed=True,
            host=host or HostIds(),
        )
    if sandboxed:
        return ProcessUsers(
            honoured=False,
            runs_as_root=False,
            sandboxed=True,
            why_not=(
                "homerun does not run as root, so its sandbox runs every app as homerun's own "
                "user (its user namespace maps no other); run homerun as root with sandbox: on "
                "in config.yaml, or remove runAsUser and runAsGroup"
            ),
        )
    return ProcessUsers(
        honoured=False,
        runs_as_root=privileged,
        why_not=(
            "instances are not sandboxed here (sandbox: off in config.yaml, or this machine "
            "cannot make one), so they run as the daemon's own user; set sandbox: on in "
            "config.yaml (homerun running as root), deploy a Dockerfile that podman builds, or "
            "remove runAsUser and runAsGroup"
        ),
    )
