"""Which user a revision's instances run as, and with which privileges: the container's
securityContext (runAsUser, runAsGroup, runAsNonRoot; allowPrivilegeEscalation, capabilities,
seccompProfile, readOnlyRootFilesystem) against what the runtime that runs them can honour
(pure)."""

from __future__ import annotations

from homerun.errors import InvalidSpec
from homerun.model.run_as import ProcessUsers, RunAs
from homerun.spec import RevisionSpec


def instance_user(spec: RevisionSpec, *, container: bool, processes: ProcessUsers) -> RunAs | None:
    """The user the revision's instances run as (None: the runtime's default), or InvalidSpec
    saying why the securityContext cannot be honoured here."""
    asked = spec.run_as_user is not None or spec.run_as_group is not None
    if container:
        if spec.run_as_group is not None and spec.run_as_user is None:
            raise InvalidSpec(
                "securityContext.runAsGroup: podman takes a group only with a user; give "
                "runAsUser too"
            )
        if spec.run_as_non_root and spec.run_as_user is None:
            raise InvalidSpec(
                "securityContext.runAsNonRoot: homerun does not check an image's USER yet; "
                "give runAsUser too (a user id other than 0)"
            )
        return RunAs(spec.run_as_user, spec.run_as_group) if asked else None
    if asked and not processes.honoured:
        raise InvalidSpec(f"securityContext.runAsUser/runAsGroup: {processes.why_not}")
    for field, given in (("runAsUser", spec.run_as_user), ("runAsGroup", spec.run_as_group)):
        if given == 0:
            # Root without capabilities still owns what only root may read on this machine.
            raise InvalidSpec(
                f"securityContext.{field}: the sandbox never runs an app as root (it would "
                "read the files only root may read on this machine); give another id, or "
                "deploy a Dockerfile, whose container may run as its own root"
            )
        if given is not None and given in processes.reserved:
            first, last = processes.reserved.start, processes.reserved.stop - 1
            raise InvalidSpec(
                f"securityContext.{field}: {given} is kept for the revisions' own users "
                f"({first}..{last}); give an id outside that range"
            )
        owner = None if given is None else processes.host.owner(given, group=field != "runAsUser")
        if owner is not None:
            raise InvalidSpec(
                f"securityContext.{field}: {given} is {owner} on this machine, and the sandbox "
                "runs an app with the machine's own ids: it would read and write what that "
                "one may; give an id no user or group of this machine has, or remove "
                f"{field} (each revision runs as a user of its own)"
            )
    if spec.run_as_user is not None and spec.run_as_group is None:
        # The sandbox's group for a runAsUser alone is that same id (sandbox.user_and_group).
        owner = processes.host.owner(spec.run_as_user, group=True)
        if owner is not None:
            raise InvalidSpec(
                f"securityContext.runAsUser: {spec.run_as_user} alone runs the app with the "
                f"group {spec.run_as_user} too, which is {owner} on this machine: it would "
                "read and write what that group may; give runAsGroup an id no group of this "
                "machine has"
            )
    if spec.run_as_non_root and spec.run_as_user is None and processes.runs_as_root:
        raise InvalidSpec(
            "securityContext.runAsNonRoot: instances would run as root (the daemon's user, "
            "unsandboxed); set sandbox: on in config.yaml, which runs each revision as a user "
            "of its own, or give runAsUser"
        )
    return RunAs(spec.run_as_user, spec.run_as_group) if asked else None


def check_privileges(spec: RevisionSpec, *, container: bool, processes: ProcessUsers) -> None:
    """InvalidSpec when the runtime that runs the revision's instances cannot give them the
    privileges its securityContext asks for (and its root's writability). A container gets
    them all from podman but an unconfined seccomp profile; the sandbox already holds what a
    restricted container asks (no capability, no_new_privs, a read-only root), but has no
    seccomp filter; unsandboxed, nothing is taken from what the daemon's user holds."""
    if container:
        if spec.seccomp_profile == "Unconfined":
            raise InvalidSpec(
                "securityContext.seccompProfile (the container's or the pod's): homerun runs "
                "every container under podman's default seccomp profile; remove "
                "seccompProfile, or set its type to RuntimeDefault"
            )
        return
    if processes.sandboxed:
        if spec.read_only_root_filesystem is False:
            raise InvalidSpec(
                "securityContext.readOnlyRootFilesystem: the sandbox's root is read-only (an "
                "app writes /tmp and /dev/shm); remove the field or set it to true, or deploy a "
                "Dockerfile that podman builds"
            )
        if spec.allow_privilege_escalation:
            raise InvalidSpec(
                "securityContext.allowPrivilegeEscalation: the sandbox runs every app with "
                "no_new_privs; remove the field or set it to false, or deploy a Dockerfile "
                "that podman builds"
            )
        if spec.capabilities_add:
            raise InvalidSpec(
                "securityContext.capabilities.add: the sandbox gives an app no capability; "
                "remove capabilities.add (the app listens on $PORT, which needs none), or "
                "deploy a Dockerfile that podman builds"
            )
    else:
        asked = [
            field
            for field, given in (
                ("allowPrivilegeEscalation: false", spec.allow_privilege_escalation is False),
                ("readOnlyRootFilesystem: true", bool(spec.read_only_root_filesystem)),
                ("capabilities.drop", bool(spec.capabilities_drop)),
                ("capabilities.add", bool(spec.capabilities_add)),
            )
            if given
        ]
        if asked:
            raise InvalidSpec(
                f"securityContext.{asked[0]}: instances are not sandboxed here (sandbox: off "
                "in config.yaml, or this machine cannot make one), so they hold what the "
                "daemon's user holds; set sandbox: on in config.yaml, deploy a Dockerfile that "
                f"podman builds, or remove {asked[0].partition(':')[0]}"
            )
    if spec.seccomp_profile == "RuntimeDefault":
        raise InvalidSpec(
            "securityContext.seccompProfile (the container's or the pod's): instances that are "
            "not containers run without a seccomp filter here (sandboxed, they hold no "
            "capability and run with no_new_privs); remove seccompProfile, set its type to "
            "Unconfined, or deploy a Dockerfile that podman builds (its default profile)"
        )
