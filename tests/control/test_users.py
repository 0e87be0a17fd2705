"""Which user instances run as, with which privileges: securityContext against what each
runtime can honour."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.control.users import check_privileges, instance_user
from homerun.errors import InvalidSpec
from homerun.model.run_as import HostIds, RunAs, process_users
from homerun.runtime.sandbox import HostIdOwners
from homerun.spec import RevisionSpec

SANDBOX_AS_ROOT = process_users(sandboxed=True, privileged=True, reserved=range(100, 200))
SANDBOX_AS_USER = process_users(sandboxed=True, privileged=False)
UNSANDBOXED_ROOT = process_users(sandboxed=False, privileged=True)
UNSANDBOXED_USER = process_users(sandboxed=False, privileged=False)


def spec(**fields: object) -> RevisionSpec:
    return RevisionSpec(source="/s", **fields)  # type: ignore[arg-type]


def test_no_security_context_is_the_runtimes_default_user() -> None:
    for processes in (SANDBOX_AS_ROOT, SANDBOX_AS_USER, UNSANDBOXED_ROOT, UNSANDBOXED_USER):
        assert instance_user(spec(), container=False, processes=processes) is None
    assert instance_user(spec(), container=True, processes=UNSANDBOXED_USER) is None


def test_the_sandbox_as_root_and_a_container_honour_run_as_user() -> None:
    asked = spec(run_as_user=2020, run_as_group=2021)
    assert instance_user(asked, container=False, processes=SANDBOX_AS_ROOT) == RunAs(2020, 2021)
    user = instance_user(asked, container=True, processes=UNSANDBOXED_USER)
    assert user is not None and user.engine_user() == "2020:2021"
    alone = instance_user(spec(run_as_user=7), container=True, processes=UNSANDBOXED_USER)
    assert alone is not None and alone.engine_user() == "7"  # the image's group for it


@pytest.mark.parametrize(
    ("processes", "said"),
    [
        (SANDBOX_AS_USER, "homerun does not run as root"),
        (UNSANDBOXED_ROOT, "instances are not sandboxed here"),
        (UNSANDBOXED_USER, "instances are not sandboxed here"),
    ],
)
def test_elsewhere_the_deploy_says_why_not_and_what_to_do(processes: object, said: str) -> None:
    with pytest.raises(InvalidSpec) as refused:
        instance_user(spec(run_as_group=5), container=False, processes=processes)  # type: ignore[arg-type]
    assert said in str(refused.value) and "remove runAsUser" in str(refused.value)


def test_run_as_non_root_refuses_what_would_run_as_root() -> None:
    non_root = spec(run_as_non_root=True)
    with pytest.raises(InvalidSpec, match="instances would run as root"):
        instance_user(non_root, container=False, processes=UNSANDBOXED_ROOT)
    # The sandbox's revision user and an unprivileged daemon's are not root.
    assert instance_user(non_root, container=False, processes=SANDBOX_AS_ROOT) is None
    assert instance_user(non_root, container=False, processes=UNSANDBOXED_USER) is None
    # A container's default user is its image's, not read yet: a user must be given.
    with pytest.raises(InvalidSpec, match="give runAsUser too"):
        instance_user(non_root, container=True, processes=UNSANDBOXED_USER)


def test_the_sandbox_never_runs_an_app_as_root_nor_as_another_revisions_user() -> None:
    for fields in ({"run_as_user": 0}, {"run_as_group": 0}):
        with pytest.raises(InvalidSpec, match="the sandbox never runs an app as root"):
            instance_user(spec(**fields), container=False, processes=SANDBOX_AS_ROOT)
    with pytest.raises(InvalidSpec, match=r"150 is kept for the revisions' own users \(100..199\)"):
        instance_user(spec(run_as_user=150), container=False, processes=SANDBOX_AS_ROOT)
    # A container's root is the container's.
    root = instance_user(spec(run_as_user=0), container=True, processes=SANDBOX_AS_ROOT)
    assert root == RunAs(0, None)


def test_the_sandbox_never_runs_an_app_with_an_id_of_this_machines() -> None:
    # The sandbox runs an app with the host's own ids: runAsUser 65534, runAsGroup 42 (shadow)
    # would read what nobody and the shadow group may (/etc/shadow).
    host = HostIds(
        users={65534: "nobody", 101: "postgres"},
        groups={42: "shadow"},
        subordinate_users=(("alice", range(100000, 165536)),),
    )
    processes = process_users(sandboxed=True, privileged=True, reserved=range(100, 200), host=host)
    with pytest.raises(InvalidSpec) as refused:
        instance_user(spec(run_as_user=65534), container=False, processes=processes)
    assert str(refused.value) == (
        "securityContext.runAsUser: 65534 is the user nobody on this machine, and the sandbox "
        "runs an app with the machine's own ids: it would read and write what that one may; "
        "give an id no user or group of this machine has, or remove runAsUser (each revision "
        "runs as a user of its own)"
    )
    with pytest.raises(InvalidSpec, match="runAsGroup: 42 is the group shadow on this machine"):
        instance_user(spec(run_as_user=2020, run_as_group=42), container=False, processes=processes)
    # runAsUser alone: the group is that same id, here the host's ssl-cert.
    alone = process_users(sandboxed=True, privileged=True, host=HostIds(groups={103: "ssl-cert"}))
    with pytest.raises(InvalidSpec, match="103 too, which is the group ssl-cert on this machine"):
        instance_user(spec(run_as_user=103), container=False, processes=alone)
    assert instance_user(spec(run_as_user=103, run_as_group=2021), container=False, processes=alone)
    with pytest.raises(InvalidSpec, match="100005 is in alice's subordinate range 100000..165535"):
        instance_user(spec(run_as_user=100005), container=False, processes=processes)
    assert instance_user(spec(run_as_user=2020), container=False, processes=processes) == RunAs(
        2020, None
    )
    # A container's ids are the container's (podman's user namespace or its own root).
    assert instance_user(spec(run_as_user=65534), container=True, processes=processes)


def test_this_machines_ids_are_looked_up_at_each_call(tmp_path: Path) -> None:
    owners = HostIdOwners(etc=tmp_path)
    assert owners.owner(0, group=False) == "the user root"
    assert owners.owner(0, group=True) == "the group root"
    assert owners.owner(2_000_000_001, group=False) is None
    (tmp_path / "subuid").write_text("alice:100000:65536\nbroken line\n")
    assert owners.owner(100005, group=False) == "in alice's subordinate range 100000..165535"
    assert owners.owner(100005, group=True) is None  # no subgid file there


# -- Privileges: allowPrivilegeEscalation, capabilities, seccompProfile ----------------------

RESTRICTED = {
    "allow_privilege_escalation": False,
    "read_only_root_filesystem": True,
    "capabilities_drop": ["ALL"],
    "seccomp_profile": "RuntimeDefault",
}
EVERY_PROCESS_RUNTIME = (SANDBOX_AS_ROOT, SANDBOX_AS_USER, UNSANDBOXED_ROOT, UNSANDBOXED_USER)


def test_a_container_honours_a_restricted_security_context() -> None:
    asked = spec(**RESTRICTED, capabilities_add=["NET_BIND_SERVICE"])
    for processes in EVERY_PROCESS_RUNTIME:  # the process runtime's state is not a container's
        check_privileges(asked, container=True, processes=processes)
    with pytest.raises(InvalidSpec, match="under podman's default seccomp profile"):
        check_privileges(
            spec(seccomp_profile="Unconfined"), container=True, processes=SANDBOX_AS_ROOT
        )


def test_the_sandbox_already_holds_what_a_restricted_container_asks_but_seccomp() -> None:
    restricted_without_seccomp = spec(**{**RESTRICTED, "seccomp_profile": None})
    for processes in (SANDBOX_AS_ROOT, SANDBOX_AS_USER):
        check_privileges(restricted_without_seccomp, container=False, processes=processes)
        check_privileges(spec(seccomp_profile="Unconfined"), container=False, processes=processes)
        for asked, said in (
            (spec(**RESTRICTED), "instances that are not containers run without a seccomp filter"),
            (spec(allow_privilege_escalation=True), "the sandbox runs every app with no_new_privs"),
            (spec(read_only_root_filesystem=False), "the sandbox's root is read-only"),
            (spec(capabilities_add=["NET_BIND_SERVICE"]), "the sandbox gives an app no capability"),
        ):
            with pytest.raises(InvalidSpec, match=said):
                check_privileges(asked, container=False, processes=processes)


def test_unsandboxed_nothing_is_taken_from_what_the_daemons_user_holds() -> None:
    for processes in (UNSANDBOXED_ROOT, UNSANDBOXED_USER):
        check_privileges(spec(), container=False, processes=processes)
        check_privileges(
            spec(read_only_root_filesystem=False), container=False, processes=processes
        )
        check_privileges(
            spec(allow_privilege_escalation=True), container=False, processes=processes
        )
        for asked, field in (
            (spec(allow_privilege_escalation=False), "allowPrivilegeEscalation: false"),
            (spec(read_only_root_filesystem=True), "readOnlyRootFilesystem: true"),
            (spec(capabilities_drop=["NET_RAW"]), "capabilities.drop"),
            (spec(capabilities_add=["NET_BIND_SERVICE"]), "capabilities.add"),
        ):
            with pytest.raises(InvalidSpec) as refused:
                check_privileges(asked, container=False, processes=processes)
            message = str(refused.value)
            assert message.startswith(f"securityContext.{field}: instances are not sandboxed"), (
                message
            )
            assert "set sandbox: on in config.yaml" in message
            assert message.endswith(f"or remove {field.partition(':')[0]}"), message
