"""An instance's resource limits as numbers: `--memory 512Mi` in bytes, `--cpu 500m` in
thousandths of a core, with Cloud Run's defaults (512 MiB, one CPU) where none was given."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MEMORY = "512Mi"
DEFAULT_CPU = "1"
MiB = 1024 * 1024

# Kubernetes quantities: binary suffixes are powers of 1024, decimal ones of 1000.
_MEMORY_UNITS = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    cpu_millis: int  # 1000 is one core

    @property
    def memory_mib(self) -> int:
        return round(self.memory_bytes / MiB)


def memory_bytes(quantity: str) -> int:
    """`512Mi` -> 536870912, `1G` -> 10**9, `1000000` -> 1000000 (spec.py validated it)."""
    for suffix in sorted(_MEMORY_UNITS, key=len, reverse=True):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * _MEMORY_UNITS[suffix])
    return int(float(quantity))


def cpu_millis(quantity: str) -> int:
    """`1` -> 1000, `0.5` -> 500, `250m` -> 250."""
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


def below_one_cpu(cpu: str | None) -> bool:
    """Whether `cpu` is a fraction of a CPU, where Cloud Run's instances take one request at a
    time: "If not specified or 0, [containerConcurrency] defaults to 80 when requested CPU >= 1
    and defaults to 1 when requested CPU < 1"; more is refused ("Total cpu < 1 is not
    supported with concurrency > 1"). Not a CPU amount (spec.py refuses it): False."""
    if cpu is None:
        return False
    try:
        return cpu_millis(cpu) < 1000
    except (ValueError, OverflowError):  # `lots`, `nan`, `inf`
        return False


def concurrency_beyond_cpu(cpu: str, concurrency: int) -> str | None:
    """What is wrong with `concurrency` requests at a time at `cpu`, as Cloud Run says it."""
    if not below_one_cpu(cpu) or concurrency <= 1:
        return None
    return (
        f"--cpu {cpu} (resources.limits.cpu) is below one CPU, where an instance takes one "
        'request at a time, as on Cloud Run ("Total cpu < 1 is not supported with concurrency '
        f'> 1"), and the concurrency is {concurrency}: add --concurrency 1 '
        "(containerConcurrency: 1), or give --cpu 1 or more"
    )


def limits(cpu: str | None, memory: str | None) -> Limits:
    """A revision's (or job's) limits: what it asked for, else Cloud Run's defaults."""
    return Limits(
        memory_bytes=memory_bytes(memory or DEFAULT_MEMORY),
        cpu_millis=cpu_millis(cpu or DEFAULT_CPU),
    )


DEFAULT_LIMITS = limits(None, None)
