"""Which user a revision's instances run as: the container's securityContext (runAsUser,
runAsGroup, runAsNonRoot) against what the runtime that runs them can honour (pure)."""

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
    if spec.run_as_non_root and spec.run_as_user is None and processes.runs_as_root:
        raise InvalidSpec(
            "securityContext.runAsNonRoot: instances would run as root (the daemon's user, "
            "unsandboxed); set sandbox: on in config.yaml, which runs each revision as a user "
            "of its own, or give runAsUser"
        )
    return RunAs(spec.run_as_user, spec.run_as_group) if asked else None
