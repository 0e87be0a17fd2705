"""The container's startupProbe, readinessProbe and livenessProbe as Knative writes them, read
into homerun's Probe (model/probes.py)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator, model_validator

from homerun.knative._level import KnativeModel, within
from homerun.model.probes import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_PERIOD_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    Probe,
    ProbeAction,
)

MAX_STARTUP_SECONDS = 3600
_PROBE_HOST = "not supported: a probe goes to the instance itself"


class TcpSocket(KnativeModel):
    refused = {"host": _PROBE_HOST}

    port: int | None = None  # the container port; 0 or none means it too


class GrpcAction(KnativeModel):
    """Kubernetes' grpc probe: grpc.health.v1.Health/Check on the container port (h2c)."""

    port: int | None = None  # the container port; 0 or none means it too
    service: str | None = None  # the service whose health is asked; none: the server's


class HttpHeader(KnativeModel):
    name: str
    value: str


class HttpGet(KnativeModel):
    refused = {"host": _PROBE_HOST}

    path: str = "/"
    port: int | None = None  # the container port; 0 or none means it too
    http_headers: list[HttpHeader] | None = None
    scheme: str = "HTTP"

    @field_validator("scheme")
    @classmethod
    def _http(cls, scheme: str) -> str:
        if scheme != "HTTP":
            raise ValueError("only HTTP: instances are spoken to in plain HTTP/1.1")
        return scheme

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"must start with '/', got {path!r}")
        return path


class ExecAction(KnativeModel):
    command: list[str] = Field(description="the command to run in the instance's environment")

    @field_validator("command")
    @classmethod
    def _some_command(cls, command: list[str]) -> list[str]:
        if not command:
            raise ValueError("required: the command to run")
        return command


class ContainerProbe(KnativeModel):
    """A startupProbe, readinessProbe or livenessProbe: one action (httpGet, tcpSocket or exec;
    tcpSocket when none is given) and Kubernetes' timing fields with their defaults."""

    refused = {
        "terminationGracePeriodSeconds": "not supported: stop-grace-seconds applies",
    }
    # Kubernetes requires successThreshold 1 for these; readiness may ask for more.
    once_only: ClassVar[bool] = True
    # Knative lets readiness probe every 0 s (aggressively, until first ready).
    zero_period: ClassVar[bool] = False

    http_get: HttpGet | None = None
    tcp_socket: TcpSocket | None = None
    exec: ExecAction | None = None
    grpc: GrpcAction | None = None
    initial_delay_seconds: Annotated[int, within(0, MAX_STARTUP_SECONDS)] = 0
    period_seconds: int | None = None
    timeout_seconds: Annotated[int, within(1, MAX_STARTUP_SECONDS)] = DEFAULT_TIMEOUT_SECONDS
    success_threshold: Annotated[int, within(1, 1000)] = 1
    failure_threshold: Annotated[int, within(1, 1000)] = DEFAULT_FAILURE_THRESHOLD

    @field_validator("period_seconds")
    @classmethod
    def _period(cls, period: int | None) -> int | None:
        low = 0 if cls.zero_period else 1
        if period is not None and not low <= period <= MAX_STARTUP_SECONDS:
            raise ValueError(f"must be {low}..{MAX_STARTUP_SECONDS}, got {period}")
        return period

    @field_validator("success_threshold")
    @classmethod
    def _once(cls, threshold: int) -> int:
        if cls.once_only and threshold != 1:
            raise ValueError("must be 1")
        return threshold

    @model_validator(mode="after")
    def _one_action(self) -> ContainerProbe:
        names = ("httpGet", "tcpSocket", "exec", "grpc")
        given = [name for name in names if self._action(name)]
        if len(given) > 1:
            raise ValueError(
                f"give one of httpGet, tcpSocket, exec, grpc, not {' and '.join(given)}"
            )
        return self

    def _action(self, name: str) -> object:
        actions = {"httpGet": self.http_get, "tcpSocket": self.tcp_socket, "exec": self.exec}
        return actions[name] if name in actions else self.grpc

    @property
    def port(self) -> int | None:
        action = self.http_get or self.tcp_socket or self.grpc
        return action.port if action is not None else None

    def probe(self) -> Probe:
        """homerun's probe for this one."""
        fields: dict[str, Any] = {
            "action": ProbeAction.TCP,
            "initial_delay_seconds": self.initial_delay_seconds,
            "period_seconds": (
                DEFAULT_PERIOD_SECONDS if self.period_seconds is None else self.period_seconds
            ),
            "timeout_seconds": self.timeout_seconds,
            "success_threshold": self.success_threshold,
            "failure_threshold": self.failure_threshold,
        }
        if self.http_get is not None:
            fields["action"] = ProbeAction.HTTP
            fields["path"] = self.http_get.path
            fields["headers"] = tuple((h.name, h.value) for h in self.http_get.http_headers or [])
        elif self.exec is not None:
            fields["action"] = ProbeAction.EXEC
            fields["command"] = tuple(self.exec.command)
        elif self.grpc is not None:
            fields["action"] = ProbeAction.GRPC
            fields["service"] = self.grpc.service or ""
        return Probe.model_validate(fields)


class StartupProbe(ContainerProbe):
    """homerun's startup budget: initialDelaySeconds + periodSeconds x failureThreshold
    (Kubernetes' defaults 0, 10 and 3), spent waiting for $PORT and then for the probe."""

    @property
    def budget(self) -> int:
        return self.probe().budget

    @model_validator(mode="after")
    def _budget_in_range(self) -> StartupProbe:
        if not 1 <= self.budget <= MAX_STARTUP_SECONDS:
            raise ValueError(
                "initialDelaySeconds + periodSeconds x failureThreshold must be "
                f"1..{MAX_STARTUP_SECONDS} s, got {self.budget}"
            )
        return self


class ReadinessProbe(ContainerProbe):
    once_only = False
    zero_period = True


class LivenessProbe(ContainerProbe):
    pass
