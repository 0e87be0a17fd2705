"""The runtime inspector's wiring: the variables that load it into a Python instance
(`_inspect_path/`), and where its snapshots go."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# The folder put first on an instance's PYTHONPATH: sitecustomize.py and _homerun_inspector.py
# only, so the app can import nothing else of homerun's from it.
INSPECT_PATH = Path(__file__).resolve().parent / "_inspect_path"
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
        image's ENV or the user's) kept after the inspector's folder."""
        given = env.get("PYTHONPATH", "")
        return {
            FOLDER_VARIABLE: str(self.revision_folder(revision)),
            THRESHOLD_VARIABLE: f"{self.block_ms:g}",
            "PYTHONPATH": os.pathsep.join(part for part in (str(INSPECT_PATH), given) if part),
        }
