"""The securityContext levels of a Knative Service: the container's (its user and its
privileges) and the pod's (its seccomp profile alone). What each runtime can honour of them is
control/users.py's to say."""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import AfterValidator, model_validator

from homerun.knative._level import KnativeModel, within
from homerun.model.capabilities import both_added_and_dropped
from homerun.model.validation import errors_at
from homerun.spec import CapabilityToAdd, CapabilityToDrop, SeccompType

# Linux user and group ids, as Kubernetes bounds them.
MAX_ID = 2_147_483_647

_POD_SECURITY = (
    "not supported: give runAsUser, runAsGroup and runAsNonRoot in the container's "
    "securityContext (Knative allows the pod's only behind a feature flag)"
)
_LOCALHOST_SECCOMP = (
    "not supported: a Localhost profile is a file on the node; homerun has none (type "
    "RuntimeDefault is podman's default profile)"
)


def _seccomp_type(kind: str) -> str:
    if kind == "Localhost":
        raise ValueError(_LOCALHOST_SECCOMP)
    if kind not in get_args(SeccompType):
        raise ValueError(f"{kind!r} is not a seccomp profile type; write RuntimeDefault")
    return kind


def _unprivileged(privileged: bool) -> bool:
    if privileged:
        raise ValueError("not supported: instances are never privileged (false is allowed)")
    return privileged


class Capabilities(KnativeModel):
    drop: list[CapabilityToDrop] | None = None
    add: list[CapabilityToAdd] | None = None

    @model_validator(mode="after")
    def _in_one_list(self) -> Capabilities:
        said = both_added_and_dropped(self.add or [], self.drop or [])
        if said is not None:
            raise errors_at([(("add",), said)])
        return self


class SeccompProfile(KnativeModel):
    refused = {"localhostProfile": _LOCALHOST_SECCOMP}

    type: Annotated[str, AfterValidator(_seccomp_type)]


class SecurityContext(KnativeModel):
    """The container's user and privileges: honoured by the container runtime (podman's
    --user, --cap-drop, --security-opt) and by the sandbox where it holds already (no
    capability, no_new_privs) or can (the user, homerun being root); elsewhere the deploy says
    why not (control/users.py)."""

    refused = {
        "seLinuxOptions": "not supported",
        "appArmorProfile": "not supported",
        "procMount": "not supported",
        "windowsOptions": "not supported",
    }

    run_as_user: Annotated[int, within(0, MAX_ID)] | None = None
    run_as_group: Annotated[int, within(0, MAX_ID)] | None = None
    run_as_non_root: bool | None = None
    allow_privilege_escalation: bool | None = None
    read_only_root_filesystem: bool | None = None
    capabilities: Capabilities | None = None
    seccomp_profile: SeccompProfile | None = None
    # false only (Knative's rule): no instance is privileged.
    privileged: Annotated[bool, AfterValidator(_unprivileged)] | None = None

    @model_validator(mode="after")
    def _not_root(self) -> SecurityContext:
        if self.run_as_non_root and self.run_as_user == 0:
            raise errors_at(
                [(("runAsUser",), "0 is root, and runAsNonRoot is true: give another user id")]
            )
        return self


class PodSecurityContext(KnativeModel):
    """spec.template.spec.securityContext: Knative allows its seccompProfile (with secure pod
    defaults); the rest only behind a feature flag, and homerun takes the container's."""

    refused = {
        name: _POD_SECURITY
        for name in (
            "runAsUser",
            "runAsGroup",
            "runAsNonRoot",
            "fsGroup",
            "fsGroupChangePolicy",
            "supplementalGroups",
            "supplementalGroupsPolicy",
            "sysctls",
            "seLinuxOptions",
            "seLinuxChangePolicy",
            "windowsOptions",
            "appArmorProfile",
        )
    }

    seccomp_profile: SeccompProfile | None = None
