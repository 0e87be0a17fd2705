"""The daemon's life: its lock, its listeners, every piece built and wired, startup -> serve ->
shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import gc
import hashlib
import os
import resource
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import uvicorn

from homerun import build, store_db
from homerun.access import keys
from homerun.access.certificates import https_listener, reload_every
from homerun.access.discovery import issuer_documents
from homerun.access.metadata import create_metadata_app
from homerun.access.peers import connection_owner, listener_in_tree, listening_ports
from homerun.admin.api import create_app
from homerun.admin.bearer import RequireToken
from homerun.admin.dashboard import LOOPBACK_HOSTS, create_dashboard_app
from homerun.admin.serving import EmbeddedServer, embedded, listening, unix_socket
from homerun.build.sandbox import detect as probe_build_sandbox
from homerun.config import Paths, Settings, is_loopback, split_address
from homerun.daemon.wiring import control_plane
from homerun.errors import HomerunError
from homerun.model.engine import Engine, build_repository
from homerun.model.run_as import process_users
from homerun.observe.logs import LogStore, platform_entry
from homerun.observe.metrics import Metrics
from homerun.observe.overview import overview
from homerun.observe.processes import ProcessSampler
from homerun.observe.telemetry import Telemetry
from homerun.routing.hosts import router_address
from homerun.routing.proxy import Router
from homerun.routing.types import Address, Route
from homerun.runtime import Runtime
from homerun.runtime.container import ContainerRuntime, find_engine, remove_unused_images
from homerun.runtime.limited import limit_where_possible
from homerun.runtime.nat import RedirectedPorts, unredirected_server
from homerun.runtime.netns import Furnish, NetNamespace, Networks
from homerun.runtime.netns import can_make as can_make_networks
from homerun.runtime.process import ProcessRuntime, process_start_ticks
from homerun.runtime.sandbox import (
    FIRST_UID,
    NO_DROPPER,
    UID_RANGE,
    HostIdOwners,
    Sandbox,
    unmount_inspect_folders,
)
from homerun.runtime.sandbox import probe as probe_sandbox
from homerun.runtime.zygote import ZygoteRuntime
from homerun.scaling.ports import lowest_unprivileged_port
from homerun.scaling.scaler import Scaler
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.store import Store

LOG_FLUSH_SECONDS = 0.2
SAMPLE_SECONDS = 1.0
NAT_READ_SECONDS = 10.0  # how often the loopback ports NAT rules redirect are read again


class Daemon:
    def __init__(self, home: Path, settings: Settings) -> None:
        self.home = home
        self.settings = settings
        self.paths: Paths = settings.paths(home)
        self._stop = asyncio.Event()
        self._lock_file: IO[str] | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        self._take_lock()
        # RSA: ID tokens are RS256, their public key published by the metadata server.
        signing_key = keys.private_key(keys.signing_key(self.paths.signing_key))
        admin_token = keys.admin_token(self.paths.admin_token)
        store_db.check(self.paths.database)
        store = Store(self.paths.database)
        _kill_leftovers(store)
        logs = LogStore(
            self.paths.logs, max_bytes=self.settings.log_max_bytes, report=_print_problem
        )
        engine = _container_engine(self.settings.container_engine, self.paths.home)
        # Process instances in control groups of their own (runtime/limited.py); container
        # instances get theirs from podman (--memory, --cpus), so the container runtime
        # wraps the limited one and hands it every start that is not a container.
        # Each revision's processes in a sandbox of its own where this machine can make one
        # (runtime/sandbox.py); what it lacks is said here, in status and in describe.
        sandbox, sandbox_said = probe_sandbox(self.settings.sandbox, self.home)
        # Builds run the deploy's code (pip): as a user of their own in a sandbox where this
        # machine gives one (build/sandbox.py), whatever `sandbox:` says of instances.
        build_sandbox, build_said = probe_build_sandbox()
        if build_sandbox is None and os.geteuid() == 0:
            print(f"homerun: warning: {build_said}", file=sys.stderr, flush=True)
        if os.geteuid() == 0:
            # Inspector folders a killed daemon left mounted (Sandbox.prepare mounts them).
            unmount_inspect_folders(self.paths.inspections)
        lacking = None
        if sandbox is None and self.settings.sandbox != "off":
            lacking = sandbox_said  # asked for, and this machine lacks something
            print(f"homerun: warning: {sandbox_said}", file=sys.stderr, flush=True)
        # Sandboxed, each revision gets a network namespace of its own where homerun can make
        # one and connect into it (root): the router and the probes connect in, the router
        # and the metadata server listen in it too (furnished once they serve, below).
        networks: Networks | None = None
        if sandbox is not None:
            shared = can_make_networks()
            if shared is None:
                networks = Networks(slirp4netns=shutil.which("slirp4netns"))
                sandbox_said = f"{sandbox_said}; {networks.describe()}"
            else:
                sandbox_said = f"{sandbox_said}; {shared}"
                print(f"homerun: warning: instances get {shared}", file=sys.stderr, flush=True)
        runtime = limit_where_possible(
            ZygoteRuntime(
                memory_budget=self.settings.zygote_memory_budget_bytes,
                sandbox=sandbox,
                unsandboxed=lacking,
                networks=networks,
            )
            if self.settings.zygote
            else ProcessRuntime(sandbox=sandbox, unsandboxed=lacking, networks=networks),
            self.home,
        )
        runtime.open()
        # Revisions built into container images run as containers; all others as processes.
        containers = (
            ContainerRuntime(
                engine,
                runtime,
                home=self.paths.home,
                unrooted=_why_no_container_zygotes(self.settings, sandbox, networks),
                networks=networks,
            )
            if engine
            else None
        )
        instances: Runtime = containers or runtime
        if containers is not None:
            await containers.remove_leftovers(
                lambda line: logs.emit(platform_entry("homerun", line))
            )
        loop = asyncio.get_running_loop()
        clock = loop.time
        # Loopback ports a NAT rule sends elsewhere (runtime/nat.py), read now and every
        # NAT_READ_SECONDS: no instance is given one.
        redirects = RedirectedPorts()
        await redirects.refresh()
        # What the process runtime honours of a securityContext (model/run_as.py).
        users = process_users(
            sandboxed=sandbox is not None,
            privileged=sandbox.privileged if sandbox is not None else os.geteuid() == 0,
            reserved=range(FIRST_UID, FIRST_UID + UID_RANGE),
            host=HostIdOwners(),
        )
        supervisor = Supervisor(
            instances,
            logs,
            InstanceRegistry(
                record=lambda name, revision, pid: store.record_instance(
                    name, revision, pid, process_start_ticks(pid)
                ),
                forget=store.forget_instance,
            ),
            clock=clock,
            probe_interval=self.settings.probe_interval_seconds,
            stop_grace=self.settings.stop_grace_seconds,
            listener_in_tree=listener_in_tree,
            listening_ports=listening_ports,
            network=networks.get if networks is not None else None,
            redirected_ports=redirects.ports,
            # In a revision's network namespace, or as root unsandboxed, an app may listen on
            # any port; otherwise, on this machine's loopback, as a user that is not root.
            lowest_port=(
                0 if networks is not None or users.runs_as_root else lowest_unprivileged_port()
            ),
        )
        scaler = Scaler(
            supervisor,
            logs,
            units=lambda: live.units.values(),
            clock=clock,
            tick_interval=self.settings.autoscaler.tick_interval,
        )
        # Listeners the control plane names to instances and users are bound first, so that
        # every piece is built knowing its addresses.
        dashboard_socket = self._dashboard_socket(redirects.ports())
        metadata_socket = listening(unredirected_server("127.0.0.1", redirects.ports()))
        dashboard_host, dashboard_port = dashboard_socket.getsockname()[:2]
        dashboard_url = f"http://{dashboard_host}:{dashboard_port}"
        control = control_plane(
            settings=self.settings,
            paths=self.paths,
            store=store,
            logs=logs,
            supervisor=supervisor,
            build=functools.partial(build.build, engine=engine),
            engine=engine,
            poke=scaler.poke,
            clock=clock,
            signing_key=signing_key,
            metadata_address=metadata_socket.getsockname()[:2],
            dashboard_url=dashboard_url,
            host_env=sandbox.inherited_env(os.environ) if sandbox is not None else os.environ,
            runtime=instances,
            release_images=(
                functools.partial(remove_unused_images, engine, stopped=self._stop.is_set)
                if engine
                else None
            ),
            containers=containers.describe() if containers is not None else None,
            sandbox=sandbox_said if sandbox is not None else f"none: {sandbox_said}",
            mounts_refused=None if sandbox is not None else sandbox_said,
            process_users=users,
        )
        live, authority = control.live, control.authority
        published = authority.published()
        processes = ProcessSampler()
        units = lambda: live.units.values()  # noqa: E731 - read when called
        metrics = Metrics(units, processes)
        telemetry = Telemetry(
            logs=logs,
            metrics=metrics,
            processes=processes,
            units=units,
            precise_clock=time.perf_counter,
            request_logs=self.settings.request_logs,
            project=self.settings.project,
        )
        router = Router(
            live.resolve,
            max_body_bytes=self.settings.max_request_body_bytes,
            header_timeout=self.settings.header_timeout_seconds,
            keepalive_timeout=self.settings.keepalive_timeout_seconds,
            body_timeout=self.settings.request_body_timeout_seconds,
            body_min_rate=self.settings.request_body_min_bytes_per_second,
            body_buffer_bytes=self.settings.request_body_buffer_bytes,
            send_timeout=self.settings.send_timeout_seconds,
            on_request=telemetry.records.append if self.settings.telemetry else None,
            identify_caller=lambda peer, server: connection_owner(peer, server, control.members()),
            forwarded_authorization=authority.forwarded_authorization,
            platform_names=frozenset(
                name.encode() for name in {self.settings.domain.lower(), "127.0.0.1", "[::1]"}
            ),
            platform_documents=issuer_documents(published) if published else None,
        )
        try:
            https = (
                https_listener(
                    self.settings.domain,
                    lambda name: isinstance(live.resolve(name), Route),
                    config_file=self.paths.config_file,
                    local_authority=self.paths.tls,
                    cert_file=self.settings.tls_cert_file,
                    key_file=self.settings.tls_key_file,
                    certificates_dir=self.settings.tls_certificates_dir,
                )
                if self.settings.https_port
                else None
            )
        except HomerunError:
            store.close()
            runtime.close()
            raise
        key, port = "port", self.settings.port
        try:
            await router.start(self.settings.listen, port)
            if https is not None:
                key, port = "https-port", self.settings.https_port
                await router.start_tls(self.settings.listen, port, https.context)
        except OSError as error:
            await router.close()
            store.close()
            runtime.close()
            for_one_run = ", or give `homerun up --port N` for one run" if key == "port" else ""
            raise HomerunError(
                f"cannot listen on {self.settings.listen}:{port}: "
                f"{error.strerror}; set another `{key}:` in {self.paths.config_file} (read at "
                f"every start){for_one_run}"
            ) from None
        https_url = ""
        if https is not None:
            https_url = f" and https://{self.settings.listen}:{router.tls_port}{https.note}"
        listen = self.settings.dashboard_listen
        local = is_loopback(listen)
        dashboard = embedded(
            create_dashboard_app(
                lambda window: overview(
                    control.views,
                    telemetry,
                    logs,
                    processes,
                    window,
                    jobs=control.jobs.views,
                    pools=control.worker_pools,
                ),
                metrics.exposition,
                # Beyond loopback, anyone who reaches the port would see every service; on
                # loopback, only this machine's names for it may be asked for.
                token=None if local else admin_token,
                hosts=(*LOOPBACK_HOSTS, f"[{listen}]" if ":" in listen else listen)
                if local
                else None,
            )
        )
        dashboard_task = asyncio.ensure_future(dashboard.serve(sockets=[dashboard_socket]))
        admin = EmbeddedServer(
            uvicorn.Config(
                create_app(control, self.request_stop),
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
        )
        admin_socket = unix_socket(self.paths.admin_socket)
        admin_task = asyncio.ensure_future(admin.serve(sockets=[admin_socket]))
        servers, server_tasks = [admin, dashboard], [admin_task, dashboard_task]
        metadata = embedded(
            create_metadata_app(
                control.members,
                authority.mint,
                authority.issuer,
                project=authority.project,
                email_of=authority.email_of,
                keys=published,
            )
        )
        servers.append(metadata)
        server_tasks.append(asyncio.ensure_future(metadata.serve(sockets=[metadata_socket])))
        if networks is not None:
            networks.furnish = serve_inside(
                router,
                metadata,
                (router_address(self.settings.listen), self.settings.port),
                metadata_socket.getsockname()[:2],
            )
        admin_url = ""
        if self.settings.admin_listen:
            remote_socket = listening(self._admin_tcp_socket())
            remote_admin = embedded(
                RequireToken(create_app(control, self.request_stop), admin_token)
            )
            host, port = remote_socket.getsockname()[:2]
            admin_url = f", admin API also on http://{host}:{port} (needs {self.paths.admin_token})"
            servers.append(remote_admin)
            server_tasks.append(asyncio.ensure_future(remote_admin.serve(sockets=[remote_socket])))
        flusher = asyncio.ensure_future(logs.flush_every(LOG_FLUSH_SECONDS))
        reloads = asyncio.ensure_future(reload_every(https.checks if https else [], 10))
        sampler = asyncio.ensure_future(telemetry.sample_every(SAMPLE_SECONDS))
        scaling = asyncio.ensure_future(scaler.run())
        nat_reads = asyncio.ensure_future(redirects.keep_fresh(NAT_READ_SECONDS))
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        self.paths.pid_file.write_text(f"{os.getpid()}\n")
        try:
            await control.restore()
            # What startup imported and built lives as long as the daemon: out of the cyclic
            # collector's sight, a full collection walks only what requests allocate since.
            gc.freeze()
            print(
                f"homerun is up: router on http://{self.settings.listen}:{self.settings.port}"
                f"{https_url}, "
                f"dashboard on {dashboard_url}, admin API on {self.paths.admin_socket}"
                f"{admin_url}, state in {self.home}",
                flush=True,
            )
            await self._stop.wait()
        finally:
            grace = self.settings.stop_grace_seconds
            print(
                f"homerun is stopping: requests in flight finish (up to {grace:g}s), "
                "then instances stop",
                flush=True,
            )
            # Everything still runs while requests finish: the scaler (a queued request may
            # need an instance), the metadata server (an app may fetch a token to answer),
            # the admin API (`homerun down` waits while it answers).
            await router.drain(grace)
            scaling.cancel()
            nat_reads.cancel()
            sampler.cancel()
            reloads.cancel()
            try:
                await router.close()
                await control.close()
                await supervisor.close()
                runtime.close()
                if containers is not None:
                    await containers.close()  # the image roots, their zygotes gone
                if networks is not None:
                    networks.close()
            finally:
                if os.geteuid() == 0:  # the sandbox's inspector tmpfs (Sandbox.prepare)
                    unmount_inspect_folders(self.paths.inspections)
            for server in servers:
                server.should_exit = True
            await asyncio.gather(*server_tasks, return_exceptions=True)
            flusher.cancel()
            logs.flush()
            control.close_stores()
            store.close()
            for path in (self.paths.admin_socket, self.paths.pid_file):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            print("homerun stopped", flush=True)

    def _dashboard_socket(self, redirected: frozenset[int]) -> socket.socket:
        """The dashboard's socket; an ephemeral port no NAT rule redirects when the set one is
        taken."""
        listen, port = self.settings.dashboard_listen, self.settings.dashboard_port
        try:
            sock = socket.create_server((listen, port), reuse_port=False)
        except OSError as error:
            sock = unredirected_server(listen, redirected)
            print(
                f"homerun: dashboard port {port} is not available ({error.strerror}); "
                f"using {sock.getsockname()[1]}",
                flush=True,
            )
        return listening(sock)

    def _admin_tcp_socket(self) -> socket.socket:
        host, port = split_address(self.settings.admin_listen, "admin-listen")
        try:
            return socket.create_server((host, port))
        except OSError as error:
            raise HomerunError(
                f"cannot listen on admin-listen {self.settings.admin_listen}: "
                f"{error.strerror}; change admin-listen in {self.paths.config_file}"
            ) from None

    def _take_lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Whatever it was made with: the store, the keys, the logs and the revisions' files
        # inside are the daemon's user's alone.
        os.chmod(self.home, 0o700)
        self.paths.revisions.mkdir(exist_ok=True)
        lock_file = open(self.paths.lock_file, "a+")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            pid = _read_pid(self.paths.pid_file)
            raise HomerunError(
                f"another homerun daemon already runs with HOMERUN_HOME={self.home}"
                + (f" (pid {pid})" if pid else "")
                + "; stop it with `homerun down` or use another HOMERUN_HOME"
            ) from None
        self._lock_file = lock_file


def serve_inside(
    router: Router, metadata: EmbeddedServer, router_at: Address, metadata_at: Address
) -> Furnish:
    """What furnishes a revision's network namespace (runtime/netns.py): listeners on its own
    loopback at the router's and the metadata server's addresses, served by them, so that the
    service URLs (the hosts file) and GCE_METADATA_HOST an instance is given reach them from
    inside. A router listening on an address that is not loopback is reached at 127.0.0.1."""
    router_host = router_at[0] if is_loopback(router_at[0]) else "127.0.0.1"

    def furnish(namespace: NetNamespace, keep_free: frozenset[int]) -> Callable[[], None]:
        # A container that listens on the router's port (8080 both by default) has it to
        # itself: it reaches no service URL from inside, as on the engine's own network.
        wanted: list[tuple[str, int, Router | EmbeddedServer]] = [
            (router_host, router_at[1], router),
            (metadata_at[0], metadata_at[1], metadata),
        ]
        sockets: list[socket.socket] = []
        try:
            for host, port, _ in wanted:
                if port not in keep_free:
                    sockets.append(namespace.listen(host, port))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        servers = [server for _, port, server in wanted if port not in keep_free]
        serving = [
            asyncio.ensure_future(server.serve_socket(sock))
            for server, sock in zip(servers, sockets, strict=True)
        ]
        closers = [server.close_socket for server in servers]

        def undo() -> None:
            for task, close, sock in zip(serving, closers, sockets, strict=True):
                if task.done() and not task.cancelled() and task.exception() is None:
                    close(task.result())
                else:
                    task.cancel()
                sock.close()

        return undo

    return furnish


def _why_no_container_zygotes(
    settings: Settings, sandbox: Sandbox | None, networks: Networks | None
) -> str | None:
    """Why images' instances cannot be forked from a zygote in their own root folder here
    (runtime/image_root.py); None when they can."""
    if not settings.container_zygote:
        return "container-zygote: false in config.yaml"
    if not settings.zygote:
        return "zygote: false in config.yaml"
    if sandbox is None:
        return "instances are not sandboxed here"
    if not sandbox.privileged:
        return "homerun does not run as root (only root mounts an image's root folder)"
    if sandbox.dropper is None:
        return NO_DROPPER
    if networks is None:
        return "revisions get no network namespace of their own here"
    return None


def _container_engine(setting: str, home: Path) -> Engine | None:
    """The engine, tagging this home's builds in a repository of its own."""
    try:
        engine = find_engine(setting)
    except ValueError as error:
        raise HomerunError(str(error)) from None
    if engine is None:
        return None
    key = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    return dataclasses.replace(engine, build_repository=build_repository(key))


def run(home: Path, settings: Settings) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT or `homerun down`."""
    _raise_open_files_limit()
    daemon = Daemon(home, settings)
    try:
        import uvloop
    except ImportError:
        asyncio.run(daemon.serve())
    else:
        uvloop.run(daemon.serve())


def _raise_open_files_limit() -> None:
    """Every client connection and every connection to an instance is a descriptor: the soft
    limit goes up to the hard one (Debian's sessions start at 1,024 of 524,288), as nginx's
    worker_rlimit_nofile does. Instances inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _print_problem(message: str) -> None:
    print(f"homerun: {message}", file=sys.stderr, flush=True)


def _kill_leftovers(store: Store) -> None:
    """Instances a killed daemon left behind die now: a restart starts from a clean slate."""
    for name, pid, start_ticks in store.leftover_instances():
        if start_ticks is not None and process_start_ticks(pid) == start_ticks:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        store.forget_instance(name)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
