"""A running revision: the plan of what to run, and its live state with one owner per part.

The control plane builds a `RevisionPlan` (immutable) and a `RevisionUnit` around it; from
then on the supervisor writes only `unit.supervised`, the scaler only `unit.scaling`, and the
router only the throttler. Everyone else reads, through the unit's read-only properties.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from homerun.model.engine import ContainerSpec
from homerun.model.limits import DEFAULT_LIMITS, Limits
from homerun.model.probes import Probe
from homerun.model.run_as import RunAs
from homerun.model.states import InstanceState
from homerun.model.volumes import NO_MOUNTS, Mounts
from homerun.routing.throttler import Endpoint, Throttler
from homerun.runtime import Instance
from homerun.runtime.netns import NetNamespace
from homerun.scaling.autoscaler import Decision, PanicState, ScalingPolicy


@dataclass(frozen=True)
class RevisionPlan:
    """What to run for one revision, as the control plane built it from the revision's spec."""

    service: str
    name: str
    argv: Sequence[str]  # kept as a tuple
    env: Mapping[str, str]  # without PORT, which each instance gets on its own; kept read-only
    cwd: Path
    concurrency: int
    startup_timeout: float
    request_timeout: float
    policy: ScalingPolicy = ScalingPolicy()
    # The container's probes; a TCP connect to $PORT at startup is always made first.
    startup_probe: Probe | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    # The container's port when the spec names one: the first instance gets it as $PORT.
    container_port: int | None = None
    limits: Limits = DEFAULT_LIMITS  # --memory and --cpu, enforced where the runtime can
    # `--concurrency auto`: each instance's limit adapts below `concurrency` (routing/adaptive)
    adaptive_concurrency: bool = False
    container: ContainerSpec | None = None  # instances are containers of this image
    # Secret files (values read when the plan was made, or a newer `latest`) and volumes.
    mounts: Mounts = NO_MOUNTS
    user: RunAs | None = None  # securityContext's user, for the process runtime

    def __post_init__(self) -> None:
        # Copies: a caller that edits its list or dict afterwards does not edit the plan.
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def with_env(self, changes: Mapping[str, str]) -> RevisionPlan:
        """The same plan with some variables set (a secret read as `latest` got a version)."""
        return replace(self, env={**self.env, **changes})

    def with_secret_files(self, values: Mapping[str, bytes]) -> RevisionPlan:
        """The same plan with some secret files' contents replaced (a new `latest`)."""
        return replace(self, mounts=self.mounts.with_secret_values(values))


class UnitPhase(StrEnum):
    """Where a unit is in its life. The control plane says when it moves on (through the
    supervisor); the scaler acts on a serving unit only."""

    DEPLOYING = "deploying"  # its deploy runs: only the deploy's outcome decides its instances
    SERVING = "serving"  # the deploy confirmed it (or it was ready already): the scaler decides
    RETIRED = "retired"  # no longer routed: its instances drain and stop, the scaler keeps off


@dataclass(eq=False)
class ManagedInstance:
    name: str
    port: int
    process: Instance
    state: InstanceState
    started_at: float
    ready_at: float | None = None
    endpoint: Endpoint | None = None
    # The revision's own network namespace, where it listens (runtime/netns.py); None: the host's.
    network: NetNamespace | None = None
    # The namespace is the instance's alone (a container's): its port is no port of the host's.
    own_network: bool = False
    # Its readiness and liveness checks while it serves.
    checks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(eq=False)
class Supervised:
    """The supervisor's part of a unit: only supervisor.py writes it."""

    phase: UnitPhase
    confirmed_at: float | None = None  # when its deploy confirmed it
    instances: list[ManagedInstance] = field(default_factory=list)
    # Starts asked for whose process does not exist yet.
    pending_starts: int = 0
    start_tasks: set[asyncio.Task[ManagedInstance]] = field(default_factory=set)
    recent_output: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    # Seconds from spawn to listening, of the last instances: the 429 wait scales with it.
    startup_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    startups: int = 0  # instances that became ready, ever (startup_seconds keeps the last)
    cold_starts: int = 0  # instances started while none was ready
    liveness_restarts: int = 0  # instances stopped and replaced for failing their liveness probe
    memory_exceeded: int = 0  # instances ended for going past --memory, ever
    # Retired with no instance left, and the runtime told to forget the revision (its zygote).
    released: bool = False
    # What instances that are gone did (cost in Cloud Run's terms): their lives, their time with
    # a request in flight, their requests.
    ended_instance_seconds: float = 0.0
    ended_busy_seconds: float = 0.0
    ended_requests: int = 0

    def usage(self, now: float) -> tuple[float, float, int]:
        """(instance-seconds, busy seconds, requests) of the revision so far."""
        instance_seconds, busy, requests = (
            self.ended_instance_seconds,
            self.ended_busy_seconds,
            self.ended_requests,
        )
        for instance in self.instances:
            instance_seconds += now - instance.started_at
            endpoint = instance.endpoint
            if endpoint is not None:
                busy += endpoint.busy_seconds
                if endpoint.busy_since is not None:
                    busy += now - endpoint.busy_since
                requests += endpoint.requests
        return instance_seconds, busy, requests

    def end(self, instance: ManagedInstance, now: float) -> None:
        """An instance leaves `instances`: what it did is kept in the totals."""
        if instance not in self.instances:
            return
        self.instances.remove(instance)
        self.ended_instance_seconds += now - instance.started_at
        endpoint = instance.endpoint
        if endpoint is not None:
            self.ended_busy_seconds += endpoint.busy_seconds
            if endpoint.busy_since is not None:
                self.ended_busy_seconds += now - endpoint.busy_since
            self.ended_requests += endpoint.requests

    def confirm(self, now: float) -> None:
        """Its deploy succeeded: the scaler decides from now on. A retired unit stays retired."""
        if self.phase is UnitPhase.DEPLOYING:
            self.phase = UnitPhase.SERVING
            self.confirmed_at = now

    def retire(self) -> None:
        self.phase = UnitPhase.RETIRED


@dataclass(eq=False)
class ScalingRecord:
    """The scaler's part of a unit: only scaler.py writes it."""

    # The autoscaler's memory and what it said last.
    panic_state: PanicState = field(default_factory=PanicState)
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=20))
    overloaded_requests: int = 0  # answered 429 after waiting at max-instances


class RevisionUnit:
    """One running revision. Reads are open to all; each part has one writer."""

    def __init__(self, plan: RevisionPlan, throttler: Throttler, *, deploying: bool) -> None:
        # The control plane's: what to run (swapped whole, never edited, if it changes).
        self.plan = plan
        # The router's: the revision's request slots, queue and concurrency meter.
        self.throttler = throttler
        # The supervisor's: instances, starts, startup statistics and the phase.
        self.supervised = Supervised(UnitPhase.DEPLOYING if deploying else UnitPhase.SERVING)
        # The scaler's: the autoscaler's memory and its decisions.
        self.scaling = ScalingRecord()

    def __repr__(self) -> str:
        return f"<RevisionUnit {self.name} {self.phase}>"

    # -- identity (from the plan) --------------------------------------------------------

    @property
    def service(self) -> str:
        return self.plan.service

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def concurrency(self) -> int:
        return self.plan.concurrency

    # -- the supervisor's state, read-only -------------------------------------------------

    @property
    def phase(self) -> UnitPhase:
        return self.supervised.phase

    @property
    def instances(self) -> Sequence[ManagedInstance]:
        return self.supervised.instances

    def count(self, state: InstanceState) -> int:
        return sum(1 for instance in self.supervised.instances if instance.state == state)

    @property
    def active(self) -> int:
        """Instances that are or will be serving: pending, starting and ready."""
        return (
            self.supervised.pending_starts
            + self.count(InstanceState.STARTING)
            + self.count(InstanceState.READY)
        )

    @property
    def startup_seconds(self) -> Sequence[float]:
        return self.supervised.startup_seconds

    @property
    def average_startup(self) -> float:
        startups = self.supervised.startup_seconds
        return sum(startups) / len(startups) if startups else 0.0

    @property
    def startups(self) -> int:
        return self.supervised.startups

    @property
    def cold_starts(self) -> int:
        return self.supervised.cold_starts

    @property
    def liveness_restarts(self) -> int:
        return self.supervised.liveness_restarts

    @property
    def memory_exceeded(self) -> int:
        return self.supervised.memory_exceeded

    # -- the scaler's state, read-only -----------------------------------------------------

    @property
    def overloaded_requests(self) -> int:
        return self.scaling.overloaded_requests
