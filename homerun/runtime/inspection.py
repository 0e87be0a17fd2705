"""The runtime inspector's wiring: the variables that turn it on in a Python instance (its
hooks are loaded by `_site/sitecustomize.py`, and do nothing without HOMERUN_INSPECT), and where
its snapshots go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from homerun.runtime.names import site_pythonpath

FOLDER_VARIABLE = "HOMERUN_INSPECT"
THRESHOLD_VARIABLE = "HOMERUN_INSPECT_BLOCK_MS"


@dataclass(frozen=True)
class Inspector:
    """Where a revision's instances write their snapshots (`PORT.PID.json` each), and the
    stall that counts as a blocking call."""

    folder: Path  # HOMERUN_HOME/inspect
    block_ms: float = 100.0

    def revision_folder(self, revision: str) -> Path:
        return self.folder / revision

    def env(self, revision: str, env: Mapping[str, str]) -> dict[str, str]:
        """The variables that turn the inspector on, with the instance's own PYTHONPATH (an
        image's ENV or the user's) kept after the folder that loads it."""
        return {
            FOLDER_VARIABLE: str(self.revision_folder(revision)),
            THRESHOLD_VARIABLE: f"{self.block_ms:g}",
            "PYTHONPATH": site_pythonpath(env),
        }
