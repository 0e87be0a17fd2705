"""Instance runtimes behind one interface: plain processes, spawned or forked from a
per-revision zygote; sandboxes and containers later."""

from homerun.runtime.base import (
    Instance,
    InstanceSpec,
    OutputSink,
    Runtime,
    describe_status,
    stop_all,
)

__all__ = ["Instance", "InstanceSpec", "OutputSink", "Runtime", "describe_status", "stop_all"]
