"""Health probes as Knative and Cloud Run have them (startup, readiness, liveness), and the pure
count of consecutive results that turns probe answers into a verdict."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Kubernetes' defaults for a probe's timing.
DEFAULT_PERIOD_SECONDS = 10
DEFAULT_TIMEOUT_SECONDS = 1
DEFAULT_FAILURE_THRESHOLD = 3
MAX_PROBE_SECONDS = 3600


class ProbeAction(StrEnum):
    TCP = "tcpSocket"  # a TCP connect to $PORT
    HTTP = "httpGet"  # GET path on $PORT; 200..399 passes
    EXEC = "exec"  # a command in the instance's environment and folder; exit 0 passes
    GRPC = "grpc"  # grpc.health.v1.Health/Check over h2c on $PORT; SERVING passes


class ProbeKind(StrEnum):
    STARTUP = "startup"
    READINESS = "readiness"
    LIVENESS = "liveness"


class Probe(BaseModel):
    """One probe of a revision's container. Every action targets the instance's own $PORT (the
    runtime contract: a probe MUST target the inbound container port)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: ProbeAction = ProbeAction.TCP
    path: str = "/"  # httpGet
    headers: tuple[tuple[str, str], ...] = ()  # httpGet's httpHeaders, in order
    command: tuple[str, ...] = ()  # exec
    service: str = ""  # grpc: the service whose health is asked ("": the server's)
    initial_delay_seconds: int = Field(default=0, ge=0, le=MAX_PROBE_SECONDS)
    # 0 (readiness only, as Knative): probe aggressively until the instance is first ready.
    period_seconds: int = Field(default=DEFAULT_PERIOD_SECONDS, ge=0, le=MAX_PROBE_SECONDS)
    timeout_seconds: int = Field(default=DEFAULT_TIMEOUT_SECONDS, ge=1, le=MAX_PROBE_SECONDS)
    success_threshold: int = Field(default=1, ge=1, le=1000)
    failure_threshold: int = Field(default=DEFAULT_FAILURE_THRESHOLD, ge=1, le=1000)

    @model_validator(mode="after")
    def _action_fields(self) -> Probe:
        if self.action is ProbeAction.EXEC and not self.command:
            raise ValueError("an exec probe needs a command")
        if self.action is ProbeAction.HTTP and not self.path.startswith("/"):
            raise ValueError(f"httpGet.path must start with '/', got {self.path!r}")
        return self

    @property
    def budget(self) -> int:
        """As a startup probe: how long an instance has to pass it (Kubernetes' reading)."""
        return self.initial_delay_seconds + max(self.period_seconds, 1) * self.failure_threshold

    def with_budget(self, seconds: int) -> Probe:
        """The same startup probe with `budget` = seconds (`--startup-timeout` given): the
        period kept when it divides what is left after the delay, else 1 s."""
        delay = min(self.initial_delay_seconds, seconds - 1)
        left = seconds - delay
        period = (
            self.period_seconds if self.period_seconds and left % self.period_seconds == 0 else 1
        )
        return self.model_copy(
            update={
                "initial_delay_seconds": delay,
                "period_seconds": period,
                "failure_threshold": left // period,
            }
        )

    def describe(self) -> str:
        """The probe in words, for log lines: `GET /ready`, `TCP connect to $PORT`."""
        if self.action is ProbeAction.HTTP:
            return f"GET {self.path}"
        if self.action is ProbeAction.EXEC:
            return "exec " + " ".join(self.command)
        if self.action is ProbeAction.GRPC:
            named = f" of service {self.service!r}" if self.service else ""
            return f"gRPC health check{named}"
        return "TCP connect to $PORT"


@dataclass(frozen=True)
class ProbeRecord:
    """Consecutive results of one probe of one instance, and the verdict they give."""

    passing: bool
    successes: int = 0  # consecutive, since the last failure
    failures: int = 0  # consecutive, since the last success


def observe(record: ProbeRecord, ok: bool, probe: Probe) -> ProbeRecord:
    """The record after one more result. The verdict flips to failing after failureThreshold
    failures in a row and back to passing after successThreshold successes in a row, as the
    kubelet counts: with failureThreshold 3 and periodSeconds 1, an instance that stops
    answering is out of routing (or restarted) some 3 s later, not at its first slow answer."""
    if ok:
        successes = record.successes + 1
        passing = record.passing or successes >= probe.success_threshold
        return ProbeRecord(passing, successes, 0)
    failures = record.failures + 1
    passing = record.passing and failures < probe.failure_threshold
    return ProbeRecord(passing, 0, failures)
