"""Shared test settings: where the repository, the acceptance apps and the seed documents are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
APPS = REPO_ROOT / "tests" / "apps"
# shared/ sits beside the repository for developers and CI; the seeds are the acceptance texts.
SEEDS = REPO_ROOT.parent / "shared" / "seeds"


@pytest.fixture(scope="session")
def apps_dir() -> Path:
    return APPS
