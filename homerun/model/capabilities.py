"""Linux capabilities as a container's securityContext names them (Kubernetes writes them
without the `CAP_` prefix), and which of them an instance may be given."""

from __future__ import annotations

# Every capability of Linux up to 6.x (capability.h), in its order.
LINUX_CAPABILITIES = frozenset(
    {
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    }
)
ALL = "ALL"  # capabilities.drop: every one
# What capabilities.add may name: Knative (with its secure pod defaults) lets a container add
# back NET_BIND_SERVICE alone, and homerun gives an instance nothing more.
ADDABLE = frozenset({"NET_BIND_SERVICE"})


def capability_to_drop(name: str) -> str:
    """The name, upper case (containerd's and podman's reading); ValueError if no capability."""
    given, name = name, name.upper()
    if name != ALL and name not in LINUX_CAPABILITIES:
        prefixed = name.startswith("CAP_") and name[4:] in LINUX_CAPABILITIES
        hint = f"; write {name[4:]}" if prefixed else ""
        raise ValueError(
            f"{given!r} is not a Linux capability as Kubernetes names them (e.g. NET_RAW, or "
            f"ALL){hint}"
        )
    return name


def capability_to_add(name: str) -> str:
    given, name = name, name.upper()
    if name not in ADDABLE:
        raise ValueError(
            f"{given!r} cannot be added: an instance gets no capability beyond its runtime's "
            "default set, and may add back NET_BIND_SERVICE alone (as Knative allows with its "
            "secure pod defaults)"
        )
    return name


def both_added_and_dropped(add: list[str], drop: list[str]) -> str | None:
    """What to say of a capability named in both lists (podman refuses to run that)."""
    both = sorted(set(add) & set(drop))
    if not both:
        return None
    return f"{', '.join(both)} both added and dropped; name each capability in one list"
