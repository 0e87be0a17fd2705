"""Source folder -> revision artifact (code + cached virtualenv + what to run), no engine needed."""

from homerun.build.artifact import Artifact, load_artifact
from homerun.build.builder import build
from homerun.build.dependencies import InstallPlan, plan_dependencies
from homerun.build.dockerfile import Dockerfile
from homerun.build.dockerfile import parse as parse_dockerfile
from homerun.build.entrypoint import (
    DefaultApp,
    Entrypoint,
    detect_default_app,
    guess_server,
    resolve_entrypoint,
)
from homerun.build.venv import ensure_venv

__all__ = [
    "Artifact",
    "DefaultApp",
    "Dockerfile",
    "Entrypoint",
    "InstallPlan",
    "build",
    "detect_default_app",
    "ensure_venv",
    "guess_server",
    "load_artifact",
    "parse_dockerfile",
    "plan_dependencies",
    "resolve_entrypoint",
]
