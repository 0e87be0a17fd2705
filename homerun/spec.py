"""Service and revision specs: what a deploy asks for, validated before anything changes."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from homerun.errors import InvalidSpec
from homerun.scaling.policy import check_annotations

# A DNS label (RFC 1123) that starts with a letter, as Cloud Run requires for service names.
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

# Cloud Run sets these itself; a user may not.
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})

DEFAULT_CONCURRENCY = 80
MAX_CONCURRENCY = 1000
DEFAULT_TIMEOUT_SECONDS = 300
MAX_TIMEOUT_SECONDS = 3600
DEFAULT_STARTUP_TIMEOUT_SECONDS = 240


def validate_service_name(name: str) -> str:
    if not _SERVICE_NAME.match(name):
        raise InvalidSpec(
            f"invalid service name {name!r}: use at most 63 lowercase letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen (e.g. 'helloworld')"
        )
    if "---" in name:
        raise InvalidSpec(
            f"invalid service name {name!r}: '---' separates a tag from the service in URLs"
        )
    return name


def parse_env_vars(text: str, flag: str = "--set-env-vars") -> dict[str, str]:
    """Parse gcloud's `K=V,K2=V2` list; `^DELIM^K=V...` picks another delimiter."""
    delimiter = ","
    if text.startswith("^"):
        end = text.find("^", 1)
        if end <= 1:
            raise InvalidSpec(f"{flag}: a custom delimiter is written ^DELIM^ before the list")
        delimiter, text = text[1:end], text[end + 1 :]
    env: dict[str, str] = {}
    if not text:
        return env
    for item in text.split(delimiter):
        name, sep, value = item.partition("=")
        if not sep:
            raise InvalidSpec(
                f"{flag}: {item!r} is not KEY=VALUE; write {flag} KEY1=VALUE1,KEY2=VALUE2 "
                "(use ^;^ before the list to separate with ';' when values contain commas)"
            )
        validate_env_name(name, flag)
        env[name] = value
    return env


def validate_env_name(name: str, flag: str = "--set-env-vars") -> None:
    if name in RESERVED_ENV:
        raise InvalidSpec(
            f"{flag}: {name} is reserved: homerun sets PORT, K_SERVICE, K_REVISION and "
            "K_CONFIGURATION for every instance"
        )
    if not _ENV_NAME.match(name):
        raise InvalidSpec(
            f"{flag}: invalid variable name {name!r}: use letters, digits and '_', "
            "not starting with a digit"
        )


class RevisionSpec(BaseModel):
    """The immutable settings of one revision, as the user gave them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="absolute path of the source folder deployed")
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    container_concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)
    timeout_seconds: int = Field(DEFAULT_TIMEOUT_SECONDS, ge=1, le=MAX_TIMEOUT_SECONDS)
    startup_timeout_seconds: int = Field(DEFAULT_STARTUP_TIMEOUT_SECONDS, ge=1, le=3600)
    # Knative revision annotations: autoscaling.knative.dev/min-scale, max-scale, target...
    annotations: dict[str, str] = Field(default_factory=dict)

    def check(self) -> RevisionSpec:
        """Checks pydantic cannot express; raises InvalidSpec naming the flag."""
        for name in self.env:
            validate_env_name(name)
        check_annotations(self.annotations)
        return self


class DeployRequest(BaseModel):
    """What `homerun deploy` sends to the daemon."""

    model_config = ConfigDict(extra="forbid")

    service: str
    spec: RevisionSpec
    allow_unauthenticated: bool | None = None


def check_range(flag: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidSpec(f"{flag}: must be between {low} and {high}, got {value}")
    return value


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str, flag: str) -> int:
    """Seconds from `300`, `300s`, `5m`, `1h30m` (gcloud's duration forms)."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise InvalidSpec(f"{flag}: {text!r} is not a duration; write e.g. 300, 300s, 5m or 1h")
    hours, minutes, seconds = (int(part) if part else 0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_list(text: str) -> list[str]:
    """gcloud's list flag: `a,b,c`, or `^:^a:b:c` to split on another delimiter."""
    delimiter = ","
    if text.startswith("^"):
        end = text.find("^", 1)
        if end > 1:
            delimiter, text = text[1:end], text[end + 1 :]
    return text.split(delimiter) if text else []


_K8S_VAR = re.compile(r"\$\((\w+)\)|\$\$")


def expand_k8s_vars(argument: str, env: dict[str, str]) -> str:
    """Kubernetes expands `$(VAR)` in command and args from the container's env; `$$` is `$`."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _K8S_VAR.sub(substitute, argument)
