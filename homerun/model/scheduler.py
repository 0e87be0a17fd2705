"""Cloud Scheduler's HTTP jobs (`homerun scheduler jobs create http`): what a job calls, how,
and what each call did; the rules a target URL must meet. Values only, no I/O."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from homerun.errors import InvalidSpec

HTTP_METHODS = ("POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
# Cloud Scheduler sets these itself (or the HTTP layer does): a job may not.
RESERVED_HEADERS = frozenset({"host", "content-length", "authorization", "transfer-encoding"})
ATTEMPTS_KEPT = 20  # describe shows the newest calls
# A job's name, as Cloud Scheduler takes it: letters, digits, hyphens, underscores; 500 at most.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,500}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

State = Literal["ENABLED", "PAUSED"]


class HttpTarget(BaseModel):
    """What the job calls: `--uri`, `--http-method`, `--message-body`, `--headers`, and the
    identity whose ID token it carries (`--oidc-service-account-email`, `--oidc-token-audience`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    http_method: str = "POST"
    body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    oidc_service_account_email: str | None = None
    oidc_token_audience: str | None = None

    @property
    def audience(self) -> str:
        """The ID token's audience: given, else the URL's scheme, host and port: the service's
        URL, which its router checks the token's audience against."""
        if self.oidc_token_audience:
            return self.oidc_token_audience
        parts = urlsplit(self.uri)
        return f"{parts.scheme}://{parts.netloc}"


class SchedulerJobRequest(BaseModel):
    """What `homerun scheduler jobs create http` sends to the daemon."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    schedule: str  # unix-cron
    time_zone: str = "UTC"
    target: HttpTarget
    description: str | None = None


class CallAttempt(BaseModel):
    """One call of the target: when, for which scheduled time (None: `run`), and what came
    back (a status code, or why none did)."""

    model_config = ConfigDict(frozen=True)

    started_at: float
    scheduled_for: float | None = None
    status_code: int | None = None
    error: str | None = None
    duration_seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class SchedulerJobView(BaseModel):
    """A scheduler job as `list` and `describe` show it."""

    name: str
    schedule: str
    time_zone: str
    target: HttpTarget
    state: State
    description: str | None = None
    created_at: float
    next_run: float | None = None  # None while paused
    attempts: list[CallAttempt] = Field(default_factory=list)  # the newest first


def validate_scheduler_job_name(name: str) -> str:
    if _NAME.fullmatch(name) is None:
        raise InvalidSpec(
            f"scheduler job name {name!r}: use letters, digits, hyphens and underscores "
            "(at most 500), e.g. nightly-report"
        )
    return name


def check_target(target: HttpTarget, domain: str) -> HttpTarget:
    """The target, its method upper-cased, if homerun may call it: its URL is on loopback
    (127.0.0.0/8, ::1, localhost) or a URL of this homerun's services (SERVICE.DOMAIN); this
    machine's rules forbid any other network."""
    parts = urlsplit(target.uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSpec(
            f"--uri: {target.uri!r} is not an http(s) URL; give one such as "
            f"http://SERVICE.{domain}:8080/path"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as error:
        raise InvalidSpec(f"--uri: {target.uri!r}: {error}") from None
    if not calls_loopback(parts.hostname, domain):
        raise InvalidSpec(
            f"--uri: {parts.hostname} is not on this machine: homerun calls only loopback "
            f"addresses (127.0.0.1, ::1, localhost) and its services' URLs "
            f"(http://SERVICE.{domain}:PORT); no network beyond loopback is reachable here"
        )
    if parts.scheme == "https" and is_service_host(parts.hostname, domain):
        raise InvalidSpec(
            f"--uri: {target.uri!r}: homerun's services are called at their http:// URL "
            "(the router on loopback); write http://"
        )
    method = target.http_method.upper()
    if method not in HTTP_METHODS:
        raise InvalidSpec(
            f"--http-method: {target.http_method!r} is not one of {', '.join(HTTP_METHODS)}"
        )
    for name in target.headers:
        if _HEADER_NAME.fullmatch(name) is None:
            raise InvalidSpec(f"--headers: {name!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidSpec(
                f"--headers: {name} is set by the scheduler itself (with "
                "--oidc-service-account-email for Authorization); leave it out"
            )
    return target.model_copy(update={"http_method": method})


def calls_loopback(host: str, domain: str) -> bool:
    """Whether `host` is a loopback address, or a host of this homerun (its services' hosts
    resolve to its router, on loopback)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host == domain or host.endswith(f".{domain}"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_service_host(host: str, domain: str) -> bool:
    """A host the router answers for (SERVICE.DOMAIN, or DOMAIN itself), not an address."""
    host = host.lower().rstrip(".")
    return host == domain or host.endswith(f".{domain}")
