"""Instance runtimes behind one interface: a plain process now; sandboxes and containers later."""

from homerun.runtime.base import Instance, InstanceSpec, OutputSink, Runtime

__all__ = ["Instance", "InstanceSpec", "OutputSink", "Runtime"]
