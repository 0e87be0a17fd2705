"""The composition root: the one place that builds the pieces and wires them together.

`lifecycle.py` runs a daemon (lock, listeners, runtime, router, servers; startup -> serve ->
shutdown); `wiring.py` builds the control plane from its parts (`control_plane()`).
"""

from homerun.daemon.lifecycle import Daemon, run
from homerun.daemon.wiring import control_plane

__all__ = ["Daemon", "control_plane", "run"]
