"""Whether a new instance starts: it listens on $PORT (its own process tree, not another
program that took the port; an app listening only on ports of its own fails in seconds), then
passes its startup and readiness probes, all before the startup timeout. StartFailed
(diagnosis.py) says why not; the supervisor (supervisor.py) starts and stops the process."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import NoReturn

from homerun.model.probes import ProbeAction, ProbeRecord, observe
from homerun.runtime import describe_status
from homerun.scaling.diagnosis import StartFailed
from homerun.scaling.ports import can_connect, wrong_port
from homerun.scaling.probes import ProbeResult, ProbeTarget, run_probe
from homerun.scaling.unit import ManagedInstance, RevisionUnit

# An app that listens on ports of its own but not on $PORT for this long has a hard-coded
# port (Flask's 5000, Django's 8000): its start fails then, not at the startup timeout. An
# app that opens another port first (metrics) and binds $PORT later has this long to do so.
WRONG_PORT_SECONDS = 5.0
_PORT_CHECK_SECONDS = 0.5


class StartupCheck:
    """Waits for a started instance to listen on $PORT and pass its startup probes."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        probe_interval: float,
        listener_in_tree: Callable[[int, int], bool | None] | None,
        listening_ports: Callable[[int], set[int]] | None,
        wrong_port_seconds: float,
    ) -> None:
        self._clock = clock
        self._probe_interval = probe_interval
        # listener_in_tree(port, pid): whether the process tree of pid holds the socket that
        # takes connections to the port (access/peers); None: the probe trusts any listener.
        self._listener_in_tree = listener_in_tree
        # listening_ports(pid): the TCP ports the process tree of pid listens on (access/peers):
        # an app that listens on its own port, not $PORT, fails its start in seconds.
        self._listening_ports = listening_ports
        self._wrong_port_seconds = wrong_port_seconds

    async def listening(
        self, unit: RevisionUnit, instance: ManagedInstance, exit_watch: asyncio.Future[int]
    ) -> None:
        """TCP-connect to $PORT until it answers, the process exits or the timeout passes;
        StartFailed if it does not answer, or answers on other ports only."""
        startup_timeout = unit.plan.startup_timeout
        deadline = instance.started_at + startup_timeout
        # A forked instance listens in about 10 ms, a spawned one in 100 ms to seconds: wait
        # 2 ms at first and half as long again each time (probes at 0, 2, 5, 9.5, 16, 26,
        # 42 ... ms) up to the probe interval.
        interval = 0.002
        elsewhere_since: float | None = None  # since when it listens, but not on $PORT
        next_port_check = instance.started_at + _PORT_CHECK_SECONDS
        while True:
            if exit_watch.done():
                await self._exited_at_start(unit, instance, exit_watch.result(), "listening on")
            foreign = False
            if await can_connect(instance.port, instance.network):
                if self._listens_itself(instance):
                    return
                # Another program took the port before the instance bound it: the instance
                # will fail to bind (and exit), or bind elsewhere and time out.
                foreign = True
            now = self._clock()
            if self._listening_ports is not None and now >= next_port_check:
                next_port_check = now + _PORT_CHECK_SECONDS
                ports = self._listening_ports(instance.process.pid) - {instance.port}
                if not ports or foreign:
                    elsewhere_since = None
                elif elsewhere_since is None:
                    elsewhere_since = now
                elif now - elsewhere_since >= self._wrong_port_seconds:
                    raise StartFailed(
                        wrong_port(instance.port, ports), list(unit.supervised.recent_output)
                    )
            if now >= deadline:
                raise StartFailed(
                    f"the app did not listen on $PORT={instance.port} within the startup "
                    f"timeout of {startup_timeout:g}s; it must listen on the port given "
                    "in the PORT environment variable"
                    + (" (another program listens on that port)" if foreign else ""),
                    list(unit.supervised.recent_output),
                )
            await asyncio.wait([exit_watch], timeout=interval)
            interval = min(interval * 1.5, self._probe_interval)

    async def _exited_at_start(
        self, unit: RevisionUnit, instance: ManagedInstance, status: int, before: str
    ) -> NoReturn:
        # The last lines it printed (a traceback) explain why.
        instance.process.signal(signal.SIGKILL)
        await instance.process.wait()
        how = describe_status(status)
        message = f"the app exited ({how}) before {before} $PORT={instance.port}"
        if status == 0:
            message += (
                "; an app that does its work and exits by itself is a job: "
                "`homerun jobs deploy NAME --source DIR`, then `homerun jobs execute NAME`"
            )
        raise StartFailed(message, list(unit.supervised.recent_output))

    async def passing_probes(
        self, unit: RevisionUnit, instance: ManagedInstance, exit_watch: asyncio.Future[int]
    ) -> None:
        """The instance listens; its startup probe, then its readiness probe, must pass before
        it is ready. Both are tried at the startup pace (Knative probes aggressively until an
        instance is first ready), from initialDelaySeconds on, until the startup timeout."""
        plan = unit.plan
        deadline = instance.started_at + plan.startup_timeout
        target = probe_target(unit, instance)
        for kind, probe in (("startup", plan.startup_probe), ("readiness", plan.readiness_probe)):
            if probe is None:
                continue
            first_try = instance.started_at + probe.initial_delay_seconds
            # A command costs a process per try: 4 a second at most.
            pace = self._probe_interval if probe.action is not ProbeAction.EXEC else 0.25
            interval = 0.002
            record = ProbeRecord(passing=False)
            result: ProbeResult | None = None
            while True:
                now = self._clock()
                if now >= first_try:
                    result = await run_probe(probe, target)
                    record = observe(record, result.ok, probe)
                    if record.passing:
                        break
                    now = self._clock()
                if exit_watch.done():
                    await self._exited_at_start(
                        unit, instance, exit_watch.result(), f"passing its {kind} probe on"
                    )
                if now >= deadline:
                    why = f" ({result.detail})" if result is not None else ""
                    raise StartFailed(
                        f"the app did not pass its {kind} probe, {probe.describe()}{why}, within "
                        f"the startup timeout of {plan.startup_timeout:g}s",
                        list(unit.supervised.recent_output),
                    )
                if now < first_try:  # initialDelaySeconds: the first try waits
                    wait = min(first_try, deadline) - now
                else:
                    wait, interval = interval, min(interval * 1.5, pace)
                await asyncio.wait([exit_watch], timeout=wait)

    def _listens_itself(self, instance: ManagedInstance) -> bool:
        # In a network namespace of homerun's, no other program listens on the port; the
        # host's tables (which the check reads) may show one of the host's on the same port.
        if self._listener_in_tree is None or instance.network is not None:
            return True
        return self._listener_in_tree(instance.port, instance.process.pid) is not False


def probe_target(unit: RevisionUnit, instance: ManagedInstance) -> ProbeTarget:
    """Where the revision's probes of `instance` go, and where its exec probes run."""
    plan = unit.plan
    return ProbeTarget(
        instance.port, plan.env, plan.cwd, instance.network, instance.process.command_inside
    )
