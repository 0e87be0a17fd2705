"""The supervisor applies decisions: starts instances, probes them, drains and stops them."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from homerun.model.probes import Probe, ProbeRecord, observe
from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore, instance_entry, platform_entry
from homerun.routing.adaptive import AdaptiveLimit
from homerun.routing.throttler import Endpoint
from homerun.runtime import InstanceSpec, OutputSink, Runtime, describe_status
from homerun.runtime.netns import NetNamespace
from homerun.scaling.diagnosis import StartFailed, unstartable
from homerun.scaling.ports import can_connect, free_port, port_is_free
from homerun.scaling.probes import ProbeResult, ProbeTarget, run_probe
from homerun.scaling.startup import WRONG_PORT_SECONDS, StartupCheck, probe_target
from homerun.scaling.unit import ManagedInstance, RevisionUnit, UnitPhase
from homerun.spec import expand_k8s_vars

T = TypeVar("T")


class InstanceRegistry:
    """Where the supervisor records instance pids so that a restarted daemon can clean up."""

    def __init__(
        self,
        record: Callable[[str, str, int], None],
        forget: Callable[[str], None],
    ) -> None:
        self.record = record
        self.forget = forget


class Supervisor:
    """Applies decisions to units and owns their live state (`unit.supervised`): the only
    writer of instances, starts, startup statistics and the unit's phase."""

    def __init__(
        self,
        runtime: Runtime,
        logs: LogStore,
        registry: InstanceRegistry,
        *,
        clock: Callable[[], float],
        probe_interval: float,
        stop_grace: float,
        listener_in_tree: Callable[[int, int], bool | None] | None = None,
        listening_ports: Callable[[int], set[int]] | None = None,
        redirected_ports: Callable[[], frozenset[int]] = frozenset,
        wrong_port_seconds: float = WRONG_PORT_SECONDS,
        network: Callable[[str], NetNamespace | None] | None = None,
        lowest_port: int = 0,
    ) -> None:
        self._runtime = runtime
        # The lowest port a process instance may listen on: 0 (any) in a network namespace of
        # the revision's, or on this machine's loopback as root; else the machine's
        # ip_unprivileged_port_start. A containerPort below it is not the instance's $PORT.
        self._lowest_port = lowest_port
        # network(revision): the network namespace its instances listen in (runtime/netns.py),
        # which probes and the router connect into; None: they listen on the host's loopback.
        # network(instance): one that instance has to itself (a container's), if any.
        self._network = network or (lambda revision: None)
        # Loopback ports a NAT rule sends elsewhere (runtime/nat.py): never an instance's.
        self._redirected_ports = redirected_ports
        self._startup = StartupCheck(
            clock=clock,
            probe_interval=probe_interval,
            listener_in_tree=listener_in_tree,
            listening_ports=listening_ports,
            wrong_port_seconds=wrong_port_seconds,
        )
        self._logs = logs
        self._registry = registry
        # Startup times and a deploy's confirmation read this clock (and the startup check).
        self._clock = clock
        self._probe_interval = probe_interval
        self._stop_grace = stop_grace
        self._tasks: set[asyncio.Task[Any]] = set()
        # Ports of instances whose processes are not gone yet: two instances starting at once
        # must not be given the same one, or the second's probe would find the first listening.
        self._ports: set[int] = set()

    # -- decisions applied ------------------------------------------------------------

    def scale(self, unit: RevisionUnit, desired: int) -> None:
        """Move toward `desired` serving instances: start the missing ones all at once, drain
        and stop the surplus (an instance stops only once its in-flight requests are done)."""
        missing = desired - unit.active
        for _ in range(missing):
            self._start_in_background(unit)
        if desired == 0:
            # Instances out of routing (failing readiness) count for nothing; at zero they go.
            for instance in unit.instances:
                if instance.state == InstanceState.UNREADY:
                    self._spawn(self.stop_instance(unit, instance))
        if missing >= 0:
            return
        # Surplus: ready instances with the fewest requests in flight go first. Starting
        # ones are left to finish; the next decision sees them ready.
        ready = [instance for instance in unit.instances if instance.state == InstanceState.READY]
        ready.sort(key=lambda instance: instance.endpoint.in_flight if instance.endpoint else 0)
        for instance in ready[:-missing]:
            instance.state = InstanceState.DRAINING
            self._spawn(self.stop_instance(unit, instance, drain_timeout=unit.plan.request_timeout))

    async def start_instance(self, unit: RevisionUnit) -> ManagedInstance:
        """Start one instance and wait until it listens; raise StartFailed otherwise."""
        return await asyncio.shield(self._start_in_background(unit))

    async def confirm(self, unit: RevisionUnit, instance: ManagedInstance, seconds: float) -> None:
        """Watch a deploy's first instance a moment past its probe; StartFailed if it exits.
        Once it stays up, the deploy has confirmed the unit: it leaves the deploying phase and
        the scaler decides its instances from then on.

        gunicorn's master listens on $PORT before its worker imports the app, so an app that
        fails at import passes the TCP probe and dies some 100 ms later.
        """
        try:
            status = await asyncio.wait_for(asyncio.shield(instance.process.wait()), seconds)
        except TimeoutError:
            unit.supervised.confirm(self._clock())
            return
        raise StartFailed(
            f"the app exited ({describe_status(status)}) right after it began listening on "
            f"$PORT={instance.port}",
            list(unit.supervised.recent_output),
        )

    def retire(self, unit: RevisionUnit) -> None:
        """The unit is no longer routed: the scaler leaves it alone from now on (its instances
        are stopped by whoever retired it, with stop_instance or stop_revision). Once its last
        instance is gone, the runtime forgets the revision (its zygote stops)."""
        unit.supervised.retire()
        self._release_if_done(unit)

    async def stop_revision(self, unit: RevisionUnit) -> None:
        """Retire the unit and stop every instance it has or is starting."""
        unit.supervised.retire()
        for task in list(unit.supervised.start_tasks):
            task.cancel()
        await asyncio.gather(*unit.supervised.start_tasks, return_exceptions=True)
        await asyncio.gather(
            *(self.stop_instance(unit, instance) for instance in list(unit.instances))
        )
        if not unit.supervised.released:
            self._release(unit)

    def start_mode(self, unit: RevisionUnit) -> tuple[str, str]:
        """("zygote" | "spawn", why): how the revision's instances start."""
        return self._runtime.mode(unit.name)

    async def stop_instance(
        self, unit: RevisionUnit, instance: ManagedInstance, drain_timeout: float = 0
    ) -> None:
        """Drain (in-flight requests finish), then SIGTERM, then SIGKILL after the grace."""
        instance.state = InstanceState.DRAINING
        if instance.endpoint is not None:
            try:
                await asyncio.wait_for(unit.throttler.drain(instance.endpoint), drain_timeout)
            except TimeoutError:
                pass
        await self._terminate(instance)
        self._release_if_done(unit)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals --------------------------------------------------------------------

    def _release_if_done(self, unit: RevisionUnit) -> None:
        """A retired unit whose last instance is gone: the runtime drops what it keeps for the
        revision. This is where a retired revision's zygote stops, whoever retired it (a traffic
        change, a deletion, retention). (Should requests still queued get an instance after
        all, its start makes the zygote again, and this runs again once it is gone.)"""
        supervised = unit.supervised
        if supervised.phase is not UnitPhase.RETIRED or supervised.released:
            return
        if supervised.pending_starts or supervised.start_tasks:
            return
        if any(instance.process.returncode is None for instance in supervised.instances):
            return
        self._release(unit)

    def _release(self, unit: RevisionUnit) -> None:
        unit.supervised.released = True
        self._runtime.forget(unit.name)  # its zygote, if it has one

    def _start_in_background(self, unit: RevisionUnit) -> asyncio.Task[ManagedInstance]:
        supervised = unit.supervised
        supervised.pending_starts += 1
        supervised.released = False  # a retired unit serving its queue: released again after
        task = self._spawn(self._start_for_waiters(unit))
        supervised.start_tasks.add(task)
        task.add_done_callback(supervised.start_tasks.discard)
        # A retired unit's start that failed (or was cancelled) may have been its last hope.
        task.add_done_callback(lambda _: self._release_if_done(unit))
        return task

    async def _start_for_waiters(self, unit: RevisionUnit) -> ManagedInstance:
        try:
            return await self._start(unit)
        except StartFailed as failure:
            self._logs.emit(
                platform_entry(
                    unit.service,
                    f"Instance failed to start: {failure.message}",
                    severity="ERROR",
                    revision=unit.name,
                )
            )
            if not unit.active:
                # Nothing else will serve the queued requests: answer them now.
                unit.throttler.fail_waiters(
                    503, f"revision {unit.name} failed to start: {failure.message}"
                )
            raise

    async def _start(self, unit: RevisionUnit) -> ManagedInstance:
        """Spawn and probe one instance; the caller counted it in `pending_starts`."""
        supervised = unit.supervised
        try:
            instance = await self._spawn_process(unit)
        finally:
            supervised.pending_starts -= 1
        exit_watch = asyncio.ensure_future(instance.process.exited())
        try:
            await self._startup.listening(unit, instance, exit_watch)
            await self._startup.passing_probes(unit, instance, exit_watch)
        except BaseException:
            exit_watch.cancel()
            await self._terminate(instance)
            supervised.end(instance, self._clock())
            raise
        instance.state = InstanceState.READY
        instance.ready_at = self._clock()
        limiter = AdaptiveLimit(unit.concurrency) if unit.plan.adaptive_concurrency else None
        instance.endpoint = Endpoint(
            instance.name,
            "127.0.0.1",
            instance.port,
            unit.concurrency,
            limiter=limiter,
            network=instance.network,
        )
        unit.throttler.add(instance.endpoint)
        startup = instance.ready_at - instance.started_at
        supervised.startup_seconds.append(startup)
        supervised.startups += 1
        self._logs.emit(
            platform_entry(
                unit.service,
                f"Instance {instance.name} ready in {startup * 1000:.0f} ms",
                revision=unit.name,
                instance=instance.name,
            )
        )
        self._spawn(self._watch(unit, instance, exit_watch))
        self._check_while_serving(unit, instance)
        return instance

    async def _spawn_process(self, unit: RevisionUnit) -> ManagedInstance:
        plan, supervised = unit.plan, unit.supervised
        if not unit.count(InstanceState.READY):
            supervised.cold_starts += 1
        if plan.container is not None:
            # A container listens on its container port in its own network; the engine
            # publishes that on a free loopback port of ours. A fixed host port would also
            # meet forwarding rules the engine left for an earlier container of that port.
            port, why_not_container_port = self._free_port(), ""
        else:
            port, why_not_container_port = self._port_for(plan.container_port)
        name = f"{plan.name}-{secrets.token_hex(3)}"

        def output(stream: str, line: str) -> None:
            supervised.recent_output.append(line)
            self._logs.emit_serialized(
                unit.service, instance_entry(unit.service, unit.name, name, stream, line)
            )

        instance = await self._new_instance(unit, name, port, output)
        supervised.instances.append(instance)
        self._logs.emit(
            platform_entry(
                unit.service,
                f"Starting instance {name} on port {port}{why_not_container_port}",
                revision=unit.name,
                instance=name,
            )
        )
        return instance

    def _check_while_serving(self, unit: RevisionUnit, instance: ManagedInstance) -> None:
        plan = unit.plan
        target = probe_target(unit, instance)
        if plan.readiness_probe is not None:
            instance.checks.append(
                self._spawn(self._readiness(unit, instance, plan.readiness_probe, target))
            )
        if plan.liveness_probe is not None:
            instance.checks.append(
                self._spawn(self._liveness(unit, instance, plan.liveness_probe, target))
            )

    async def _readiness(
        self, unit: RevisionUnit, instance: ManagedInstance, probe: Probe, target: ProbeTarget
    ) -> None:
        """While it serves: failureThreshold failures in a row take it out of routing,
        successThreshold successes in a row put it back."""
        record = ProbeRecord(passing=True)
        # periodSeconds 0 is Knative's aggressive probing until first ready; then every second.
        period = max(probe.period_seconds, 1)
        while True:
            await asyncio.sleep(period)
            result = await run_probe(probe, target)
            if instance.state not in (InstanceState.READY, InstanceState.UNREADY):
                return
            verdict = observe(record, result.ok, probe)
            if record.passing and not verdict.passing:
                self._take_out(unit, instance, probe, result, verdict.failures)
            elif verdict.passing and not record.passing:
                self._put_back(unit, instance, probe, result)
            record = verdict

    def _take_out(
        self,
        unit: RevisionUnit,
        instance: ManagedInstance,
        probe: Probe,
        result: ProbeResult,
        failures: int,
    ) -> None:
        instance.state = InstanceState.UNREADY
        if instance.endpoint is not None:
            unit.throttler.suspend(instance.endpoint)
        self._logs.emit(
            platform_entry(
                unit.service,
                f"Instance {instance.name} is not ready: readiness probe {probe.describe()} "
                f"failed {failures} times in a row ({result.detail}); it gets no new requests "
                "until the probe passes again",
                severity="WARNING",
                revision=unit.name,
                instance=instance.name,
            )
        )

    def _put_back(
        self, unit: RevisionUnit, instance: ManagedInstance, probe: Probe, result: ProbeResult
    ) -> None:
        instance.state = InstanceState.READY
        if instance.endpoint is not None:
            unit.throttler.resume(instance.endpoint)
        self._logs.emit(
            platform_entry(
                unit.service,
                f"Instance {instance.name} is ready again: readiness probe {probe.describe()} "
                f"passed ({result.detail})",
                revision=unit.name,
                instance=instance.name,
            )
        )

    async def _liveness(
        self, unit: RevisionUnit, instance: ManagedInstance, probe: Probe, target: ProbeTarget
    ) -> None:
        """While it serves: failureThreshold failures in a row stop the instance and start
        another in its place (the kubelet restarts the container)."""
        record = ProbeRecord(passing=True)
        period = max(probe.period_seconds, 1)
        # initialDelaySeconds counts from the start, as the kubelet counts it.
        delay = max(period, instance.started_at + probe.initial_delay_seconds - self._clock())
        while True:
            await asyncio.sleep(delay)
            delay = period
            result = await run_probe(probe, target)
            if instance.state not in (InstanceState.READY, InstanceState.UNREADY):
                return
            record = observe(record, result.ok, probe)
            if not record.passing:
                break
        unit.supervised.liveness_restarts += 1
        self._logs.emit(
            platform_entry(
                unit.service,
                f"Instance {instance.name} failed its liveness probe {probe.describe()} "
                f"{record.failures} times in a row ({result.detail}); restarting it",
                severity="ERROR",
                revision=unit.name,
                instance=instance.name,
            )
        )
        was_routed = instance.state == InstanceState.READY
        instance.state = InstanceState.DRAINING  # no longer counted: a replacement may start
        if unit.phase is UnitPhase.SERVING and was_routed:
            self._start_in_background(unit)
        # This task is one of the checks: it stops the instance itself, the others end now.
        current = asyncio.current_task()
        for task in instance.checks:
            if task is not current:
                task.cancel()
        instance.checks.clear()
        await self.stop_instance(unit, instance)

    async def _watch(
        self, unit: RevisionUnit, instance: ManagedInstance, exit_watch: asyncio.Future[int]
    ) -> None:
        status = await exit_watch
        _cancel_checks(instance)
        # No request goes to it from now on.
        if instance.endpoint is not None:
            unit.throttler.remove(instance.endpoint)
        unit.supervised.end(instance, self._clock())
        # Whatever the main process left in its group (workers, a forked server) goes too,
        # and its last lines are read before the entry that says it exited.
        instance.process.signal(signal.SIGKILL)
        await instance.process.wait()
        self._gone(instance)
        expected = instance.state == InstanceState.DRAINING
        how = describe_status(status)
        if instance.process.memory_exceeded:
            unit.supervised.memory_exceeded += 1
            how += f", past its memory limit of {unit.plan.limits.memory_mib} MiB"
        self._logs.emit(
            platform_entry(
                unit.service,
                f"Instance {instance.name} exited ({how})",
                severity="INFO" if expected else "ERROR",
                revision=unit.name,
                instance=instance.name,
            )
        )
        self._release_if_done(unit)

    @contextlib.asynccontextmanager
    async def private_instance(self, unit: RevisionUnit) -> AsyncIterator[ManagedInstance]:
        """An instance of the revision that the router never sees: not among the unit's
        instances, not in its throttler, not counted by the autoscaler (`services advise
        --ramp` loads it). It runs as the revision's instances do: in their container, within
        their --memory and --cpu, so that what a ramp measures is what serves. Stopped, as any
        instance is, when the block ends."""
        plan = unit.plan
        port = self._free_port()
        name = f"{plan.name}-advise-{secrets.token_hex(2)}"

        def output(stream: str, line: str) -> None:
            self._logs.emit_serialized(
                unit.service, instance_entry(unit.service, unit.name, name, stream, line)
            )

        instance = await self._new_instance(unit, name, port, output)
        process = instance.process
        try:
            deadline = instance.started_at + plan.startup_timeout
            while not await can_connect(port, instance.network):
                if process.returncode is not None:
                    raise StartFailed(
                        f"the private instance {name} ended before it listened "
                        f"({describe_status(process.returncode)})",
                        None,
                    )
                if self._clock() > deadline:
                    raise StartFailed(
                        f"the private instance {name} did not listen on $PORT={port} within "
                        f"{plan.startup_timeout:g} s",
                        None,
                    )
                await asyncio.sleep(self._probe_interval)
            instance.state = InstanceState.READY
            instance.ready_at = self._clock()
            yield instance
        finally:
            await self._terminate(instance)

    async def _terminate(self, instance: ManagedInstance) -> None:
        instance.state = InstanceState.DRAINING
        _cancel_checks(instance)
        process = instance.process
        if process.returncode is None:
            process.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._stop_grace)
            except TimeoutError:
                process.signal(signal.SIGKILL)
                await process.wait()
            except asyncio.CancelledError:
                # The daemon stops during the grace (a deletion's stop, cancelled): the
                # instance goes now rather than outlive it (a container would).
                process.signal(signal.SIGKILL)
                raise
        # A server's workers may outlive its master by a moment; the group goes with it.
        process.signal(signal.SIGKILL)
        self._gone(instance)

    async def _new_instance(
        self, unit: RevisionUnit, name: str, port: int, output: OutputSink
    ) -> ManagedInstance:
        """Starts an instance of the revision on `port`, which it holds from then on, as the
        revision's instances run (its container, its --memory and --cpu, its user), and records
        its pid; StartFailed if its program cannot be run (the port given back then, as on any
        failure)."""
        plan = unit.plan
        env = dict(plan.env, PORT=str(port))
        started_at = self._clock()
        argv = [expand_k8s_vars(argument, env) for argument in plan.argv]
        self._ports.add(port)
        try:
            process = await self._runtime.start(
                InstanceSpec(
                    name=name,
                    argv=argv,
                    env=env,
                    cwd=plan.cwd,
                    port=port,
                    revision=plan.name,
                    limits=plan.limits,
                    container=plan.container,
                    mounts=plan.mounts,
                    user=plan.user,
                ),
                output,
            )
        except OSError as error:  # a missing or not executable program, a bad interpreter
            self._ports.discard(port)
            raise StartFailed(unstartable(argv, error), None) from None
        except BaseException:
            self._ports.discard(port)
            raise
        self._registry.record(name, unit.name, process.pid)
        # A container in a network namespace of its own listens on its container port there.
        own = self._network(name)
        if own is not None:
            self._ports.discard(port)
        return ManagedInstance(
            name,
            process.port,
            process,
            InstanceState.STARTING,
            started_at,
            network=own or self._network(unit.name),
            own_network=own is not None,
        )

    def _port_for(self, container_port: int | None) -> tuple[int, str]:
        """The instance's $PORT: the container port the spec names, while no other instance of
        ours holds it and it is free on loopback, else a free port of its own (and why).

        Instances share this machine's loopback, so only one at a time can listen on a fixed
        port; the others get ports of their own (apps take $PORT, so they work the same).
        With a network namespace per instance, each could have the container port."""
        if container_port is None:
            return self._free_port(), ""
        if container_port < self._lowest_port:
            return self._free_port(), (
                f" (containerPort {container_port} is below {self._lowest_port}, where only "
                "root may listen on this machine's loopback, and instances here do not run as "
                "root)"
            )
        if container_port in self._redirected_ports():
            return self._free_port(), (
                f" (connections to 127.0.0.1:{container_port} are sent elsewhere by a NAT "
                "rule, such as one a removed container left: `iptables-save -t nat` shows it)"
            )
        if container_port not in self._ports and port_is_free(container_port):
            return container_port, ""
        holder = "another instance" if container_port in self._ports else "another program"
        return self._free_port(), (
            f" (containerPort {container_port} is held by {holder}: instances share this "
            "machine's loopback)"
        )

    def _free_port(self) -> int:
        """A free loopback port that no instance of ours holds and no NAT rule redirects."""
        return free_port(self._ports | self._redirected_ports())

    def _gone(self, instance: ManagedInstance) -> None:
        """Its process is gone: forget it, and its port may be given out again."""
        self._registry.forget(instance.name)
        if not instance.own_network:
            self._ports.discard(instance.port)

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_consume_exception)
        return task


def _cancel_checks(instance: ManagedInstance) -> None:
    checks, instance.checks = instance.checks, []
    for task in checks:
        task.cancel()


def _consume_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
