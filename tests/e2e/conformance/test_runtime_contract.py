"""Knative's runtime contract (knative/specs specs/serving/runtime-contract.md) and the
assertions of knative/serving's test/conformance/runtime tests, one test per statement, named
after it (test_must_..., test_should_...), against the process runtime. A statement that cannot
apply here is skipped with the reason; conftest.py prints the tally per level."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest
import yaml
from fakes import free_port

from homerun.errors import InvalidSpec
from homerun.knative import parse_service
from homerun.runtime.sandbox import revision_uid
from homerun.scaling.ports import port_is_free

from ..harness import Platform, describe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# -- helpers ---------------------------------------------------------------------------------


def runtime(platform: Platform, service: str, **kwargs: Any) -> dict[str, Any]:
    response = platform.request(service, "GET", "/runtime", **kwargs)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def headers_seen(report: dict[str, Any]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in report["request"]["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        time.sleep(0.2)


def log_messages(platform: Platform, service: str) -> str:
    result = platform.run("logs", "read", service, "--limit", "200", timeout=30)
    assert result.returncode == 0, describe(result)
    return result.stdout


@pytest.fixture(scope="module")
def document(platform: Platform, contract: str) -> dict[str, Any]:
    """The contract service as a Knative Service document (what `services replace` reads)."""
    described = platform.run("services", "describe", contract, "--format", "yaml", check=True)
    loaded: dict[str, Any] = yaml.safe_load(described.stdout)
    return loaded


def replaced(
    platform: Platform, tmp_path: Path, base: dict[str, Any], edit: Callable[[dict[str, Any]], None]
) -> Any:
    changed = copy.deepcopy(base)
    changed.pop("status", None)
    edit(changed)
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    return platform.run("services", "replace", str(path), timeout=270)


def public(platform: Platform, service: str) -> None:
    """A service made by `services replace` is private, as on Cloud Run; the tests call it
    without a token."""
    platform.run(
        "services",
        "add-iam-policy-binding",
        service,
        "--member=allUsers",
        "--role=roles/run.invoker",
        check=True,
    )


def container(document: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return found


def refused(
    platform: Platform,
    tmp_path: Path,
    base: dict[str, Any],
    edit: Callable[[dict[str, Any]], None],
    *expected: str,
) -> None:
    result = replaced(platform, tmp_path, base, edit)
    assert result.returncode != 0, describe(result)
    for text in expected:
        assert text in result.stderr, describe(result)


# -- Lifecycle -------------------------------------------------------------------------------


def test_must_log_failures_of_the_developer_specified_process(
    platform: Platform, contract_source: Path, instance_runtime: str
) -> None:
    service = "contract-nosuchprog"
    result = platform.deploy(service, contract_source, "--command", "contract-no-such-program")
    assert result.returncode != 0
    # In the words of what runs the command: homerun, the sandbox's setpriv, podman's runc.
    missing = (
        "executable file not found in $PATH"
        if instance_runtime == "container"
        else "No such file or directory"
    )
    assert "contract-no-such-program" in result.stderr, describe(result)
    assert missing in result.stderr, describe(result)
    # The service's log says it too, where the developer reads it (`logs read`): the
    # runtime's own words, or those of the program that ran the command (the sandbox's
    # setpriv, podman).
    logs = log_messages(platform, service)
    assert "contract-no-such-program" in logs and missing in logs, logs


# -- File descriptors ------------------------------------------------------------------------


def test_should_read_eof_from_stdin(platform: Platform, instance_of: str) -> None:
    assert runtime(platform, instance_of)["stdin"] == "eof"


def test_should_collect_stdout_and_stderr_in_the_developers_logs(
    platform: Platform, contract: str
) -> None:
    runtime(platform, contract)
    until(
        lambda: (
            "runtime_contract: to stderr" in log_messages(platform, contract)
            and "runtime_contract: listening on" in log_messages(platform, contract)
        ),
        15,
        "the app's stdout and stderr lines in `logs read`",
    )


def test_should_start_with_no_descriptors_beyond_stdin_stdout_stderr(
    platform: Platform, contract: str
) -> None:
    # What the process had open before it opened anything: the daemon's own descriptors
    # (uvloop's copies of its stdio, its log files, sockets) must not leak into it.
    report = runtime(platform, contract)
    assert sorted(report["descriptors_at_start"]) == ["0", "1", "2"], report["descriptors_at_start"]


# -- Protocols and ports ---------------------------------------------------------------------


def test_must_accept_http11_requests_from_the_environment(
    platform: Platform, instance_of: str
) -> None:
    assert runtime(platform, instance_of)["request"]["version"] == "HTTP/1.1"


def test_must_provide_a_default_port_when_the_developer_gives_none(
    platform: Platform, instance_of: str
) -> None:
    # The app listens on $PORT, and the router reached it there.
    assert runtime(platform, instance_of)["env"]["PORT"].isdigit()


def on_container_port(
    platform: Platform, document: dict[str, Any], tmp_path: Path, name: str, port: int
) -> dict[str, Any]:
    """The contract app as service `name` with containerPort `port` (its startup probe
    there), public: what it reports."""

    def edit(changed: dict[str, Any]) -> None:
        changed["metadata"]["name"] = name
        container(changed)["ports"] = [{"name": "http1", "containerPort": port}]
        container(changed)["startupProbe"]["tcpSocket"]["port"] = port

    result = replaced(platform, tmp_path, document, edit)
    assert result.returncode == 0, describe(result)
    public(platform, name)
    return runtime(platform, name)


def test_must_set_port_to_the_containerPort(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    # knative/serving envvars_test TestMustEnvVars: containerPort 8801 -> PORT=8801. A port
    # free here stands for 8801, which another test on this machine may hold.
    port = free_port()
    report = on_container_port(platform, document, tmp_path, "contract-port", port)
    assert report["env"]["PORT"] == str(port)


def test_must_listen_on_a_containerPort_below_1024(
    platform: Platform, document: dict[str, Any], tmp_path: Path, instance_runtime: str
) -> None:
    # An image's server on port 80, say (Knative's secure pod defaults add NET_BIND_SERVICE
    # for one): PORT is that port, and the app, root or not, listens there. A free port below
    # 1024 stands for 80, which something on this machine may hold.
    port = next(number for number in range(1000, 600, -1) if port_is_free(number))
    unsandboxed_user = instance_runtime == "process" and os.geteuid() != 0
    report = on_container_port(platform, document, tmp_path, "contract-low-port", port)
    if unsandboxed_user:
        # On this machine's loopback, as a user who may not listen there: a port of its own,
        # and the instance's start says why.
        assert report["env"]["PORT"] != str(port), report["env"]
        logs = platform.run("services", "logs", "read", "contract-low-port", check=True).stdout
        assert f"containerPort {port} is below" in logs, logs
    else:
        assert report["env"]["PORT"] == str(port), report["env"]
    if instance_runtime == "sandbox" and os.geteuid() == 0:
        assert report["uid"] != 0  # not root, in a network namespace of the revision's own


def test_must_specify_only_one_inbound_containerPort(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        container(changed)["ports"] = [{"containerPort": 8080}, {"containerPort": 8081}]

    refused(platform, tmp_path, document, edit, "ports: must be a list of at most one port")


def test_should_not_set_hostPort(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        container(changed)["ports"] = [{"containerPort": 8080, "hostPort": 80}]

    refused(platform, tmp_path, document, edit, "ports[0].hostPort: unknown field")


def test_must_not_set_the_port_name_to_arbitrary_values(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        container(changed)["ports"] = [{"name": "websocket", "containerPort": 8080}]

    refused(platform, tmp_path, document, edit, "ports[0].name: 'websocket' is not supported")


def test_should_offer_an_http2_upgrade_on_the_same_port(
    platform: Platform, contract: str, grpc_source: Path
) -> None:
    # knative/serving protocol_test: HTTP/2 (h2c, prior knowledge) on the port that takes
    # HTTP/1.1, to an HTTP/1.1 app; and to an app whose port is named h2c (--use-http2), in
    # HTTP/2 all the way: a gRPC call, which only HTTP/2 carries.
    with httpx.Client(
        base_url=f"http://127.0.0.1:{platform.port}",
        headers={"Host": platform.host(contract)},
        http1=False,
        http2=True,
        timeout=60,
        trust_env=False,
    ) as client:
        response = client.get("/runtime")
    assert response.http_version == "HTTP/2" and response.status_code == 200, response
    platform.deploy_ok("contract-h2c", grpc_source, "--use-http2")
    options = [
        ("grpc.default_authority", platform.host("contract-h2c")),
        ("grpc.enable_http_proxy", 0),
    ]
    with grpc.insecure_channel(f"127.0.0.1:{platform.port}", options=options) as channel:
        answer = channel.unary_unary("/test.Echo/Unary")(b"h2c", timeout=60)
    assert answer.startswith(b"echo:h2c:"), answer


# -- Headers ---------------------------------------------------------------------------------


def test_should_set_inbound_request_headers_to_the_incoming_values(
    platform: Platform, instance_of: str
) -> None:
    seen = headers_seen(runtime(platform, instance_of, headers={"X-Contract": "a, b;c=1"}))
    assert seen["x-contract"] == ["a, b;c=1"]


def test_must_set_the_host_header(platform: Platform, instance_of: str) -> None:
    assert headers_seen(runtime(platform, instance_of))["host"] == [platform.host(instance_of)]


def test_must_set_the_forwarded_header(platform: Platform, instance_of: str) -> None:
    (forwarded,) = headers_seen(runtime(platform, instance_of))["forwarded"]
    assert "for=" in forwarded and "proto=http" in forwarded, forwarded


def test_should_set_x_forwarded_for_and_x_forwarded_proto(
    platform: Platform, instance_of: str
) -> None:
    seen = headers_seen(runtime(platform, instance_of))
    assert seen["x-forwarded-for"][0].split(",")[-1].strip() == "127.0.0.1"
    assert seen["x-forwarded-proto"] == ["http"]


def test_should_set_trace_headers(platform: Platform, instance_of: str) -> None:
    seen = headers_seen(runtime(platform, instance_of))
    assert seen["traceparent"][0].startswith("00-"), seen


# -- Meta requests: probes -------------------------------------------------------------------


def test_must_target_the_inbound_container_port_with_probes(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        container(changed)["readinessProbe"] = {"httpGet": {"path": "/", "port": 9}}

    refused(
        platform,
        tmp_path,
        document,
        edit,
        "readinessProbe.httpGet.port: must be the container port (8080), got 9",
    )


def test_should_start_an_instance_at_deployment_and_mark_it_ready_by_its_readiness_probe(
    platform: Platform, contract_source: Path
) -> None:
    # knative/serving readiness_probe_test TestProbeRuntime: a service with an httpGet
    # readiness probe becomes ready; the instance starts at deployment, before any request.
    service = "contract-readiness"
    probe = "httpGet.path=/healthz/readiness,periodSeconds=0"
    platform.deploy_ok(service, contract_source, "--readiness-probe", probe)
    logs = log_messages(platform, service)
    assert "ready in" in logs and "GET /healthz/readiness" in logs, logs
    assert "GET /runtime" not in logs


def test_should_mark_the_revision_failed_when_readiness_fails_at_deployment(
    platform: Platform, contract_source: Path
) -> None:
    result = platform.deploy(
        "contract-unready",
        contract_source,
        "--set-env-vars",
        "NOT_READY_AT_START=1",
        "--readiness-probe",
        "httpGet.path=/healthz/readiness",
        "--startup-timeout",
        "4",
    )
    assert result.returncode != 0, describe(result)
    assert (
        "did not pass its readiness probe, GET /healthz/readiness (GET /healthz/readiness "
        "answered 503), within the startup timeout of 4s" in result.stderr
    ), describe(result)


def test_should_stop_routing_to_an_instance_whose_readiness_probe_fails(
    platform: Platform, contract_source: Path
) -> None:
    service = "contract-unrouted"
    probe = "httpGet.path=/healthz/readiness,periodSeconds=1,failureThreshold=1"
    platform.deploy_ok(service, contract_source, "--readiness-probe", probe)
    first = runtime(platform, service)["instance"]
    assert platform.request(service, "POST", "/readiness/off").status_code == 200
    # From the next probe on, the instance gets no request: another one answers them.
    until(
        lambda: runtime(platform, service, timeout=30)["instance"] != first,
        20,
        "a request answered by another instance",
    )
    assert "is not ready: readiness probe GET /healthz/readiness failed 1 times" in (
        log_messages(platform, service)
    )


def test_should_restart_an_instance_whose_liveness_probe_fails(
    platform: Platform, contract_source: Path
) -> None:
    # knative/serving liveness_probe_test TestLivenessWithFail.
    service = "contract-liveness"
    probe = "httpGet.path=/healthz/liveness,periodSeconds=1,failureThreshold=3"
    platform.deploy_ok(service, contract_source, "--liveness-probe", probe)

    def checks() -> int:
        response = platform.request(service, "GET", "/healthz/livenessCounter", timeout=30)
        return int(response.text) if response.status_code == 200 else -1

    until(lambda: checks() >= 5, 20, "5 liveness checks")
    first = runtime(platform, service)["instance"]
    assert platform.request(service, "POST", "/start-failing").status_code == 200

    def serving_instance() -> str | None:
        # A request that reaches the failing instance as it is killed gets 502, as on
        # Knative (the kubelet kills the container): ask again.
        response = platform.request(service, "GET", "/runtime", timeout=30)
        return str(response.json()["instance"]) if response.status_code == 200 else None

    until(lambda: serving_instance() not in (None, first), 30, "a restarted instance")
    until(lambda: checks() >= 5, 20, "5 liveness checks after the restart")
    logs = log_messages(platform, service)
    assert "failed its liveness probe GET /healthz/liveness 3 times in a row" in logs, logs
    assert "restarting it" in logs


@pytest.mark.xfail(
    strict=True,
    reason="deliberately not held: exec probes run, as Kubernetes runs them (docs/knative.md)",
)
def test_should_disallow_probe_methods_other_than_httpGet_and_tcpSocket(
    document: dict[str, Any],
) -> None:
    changed = copy.deepcopy(document)
    container(changed)["livenessProbe"] = {"exec": {"command": ["true"]}}
    with pytest.raises(InvalidSpec):
        parse_service(changed)


def test_an_exec_probe_runs_inside_the_instance_as_the_app(
    platform: Platform, instance_of: str, tmp_path: Path
) -> None:
    """As Kubernetes runs one in the container: the command sees the instance's own /tmp, runs
    as the app's user (with no_new_privs where the app has it), not as homerun's user on the
    host (root here, who may read all that the sandbox or the container keeps from the app),
    and in the app's control groups."""
    described = platform.run("services", "describe", instance_of, "--format", "yaml", check=True)
    document = yaml.safe_load(described.stdout)
    service = f"{instance_of}-exec"
    marker = f"probed-{os.urandom(6).hex()}"

    def with_exec_probe(changed: dict[str, Any]) -> None:
        changed["metadata"]["name"] = service
        # Renamed into place: the test may read between two runs of the probe.
        status = "grep ^NoNewPrivs: /proc/self/status"
        report = f"{{ id -u; {status}; cat /proc/self/cgroup; }} > /tmp/{marker}.new"
        command = ["sh", "-c", f"{report} && mv /tmp/{marker}.new /tmp/{marker}"]
        container(changed)["readinessProbe"] = {"exec": {"command": command}, "periodSeconds": 1}

    result = replaced(platform, tmp_path, document, with_exec_probe)
    assert result.returncode == 0, describe(result)
    try:
        public(platform, service)
        app = runtime(platform, service)
        probed = platform.request(service, "GET", f"/tmp-file/{marker}")
        assert probed.status_code == 200, "the probe's file is not in the instance's /tmp"
        uid, no_new_privs, *control_groups = probed.text.splitlines()
        assert int(uid) == app["uid"]
        # The sandbox's app runs with no_new_privs: so does the probe's command.
        assert no_new_privs.split(":")[1].strip() == app["no_new_privs"]
        assert control_groups == app["cgroup"]
    finally:
        platform.run("services", "delete", service, check=True)
        Path("/tmp", marker).unlink(missing_ok=True)  # where a probe on the host would write


def test_an_exec_probe_past_its_timeout_is_killed_inside_the_instance(
    platform: Platform, contract: str, tmp_path: Path
) -> None:
    """As the kubelet has the runtime kill an exec probe's command past its timeoutSeconds:
    in a container too, where killing `podman exec` leaves its exec session running."""
    described = platform.run("services", "describe", contract, "--format", "yaml", check=True)
    document = yaml.safe_load(described.stdout)
    service = f"{contract}-exec-timeout"
    seconds = str(900_000 + int.from_bytes(os.urandom(3), "big") % 90_000)  # this test's own
    marker = f"slept-{seconds}"

    def with_slow_probe(changed: dict[str, Any]) -> None:
        changed["metadata"]["name"] = service
        # The first run sleeps past its timeout; the next ones pass, so that the deploy ends.
        script = f"[ -e /tmp/{marker} ] && exit 0; touch /tmp/{marker}; exec sleep {seconds}"
        container(changed)["readinessProbe"] = {
            "exec": {"command": ["sh", "-c", script]},
            "timeoutSeconds": 1,
            "periodSeconds": 1,
        }

    result = replaced(platform, tmp_path, document, with_slow_probe)
    try:
        assert result.returncode == 0, describe(result)
        public(platform, service)
        slept = platform.request(service, "GET", f"/tmp-file/{marker}")
        assert slept.status_code == 200, "the probe's first run did not start its sleep"
        deadline = time.monotonic() + 10
        while sleeping := [p.pid for p in psutil.process_iter() if _runs(p, ["sleep", seconds])]:
            assert time.monotonic() < deadline, f"the probe's command is still running: {sleeping}"
            time.sleep(0.1)
    finally:
        platform.run("services", "delete", service, check=True)
        Path("/tmp", marker).unlink(missing_ok=True)  # the process runtime's /tmp is the host's


def _runs(process: psutil.Process, argv: list[str]) -> bool:
    try:
        return bool(process.cmdline() == argv and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


# -- Process: command, args, working directory, env ------------------------------------------


def test_should_run_the_containers_command_and_args(
    platform: Platform, contract_source: Path
) -> None:
    # knative/serving cmd_args_test.
    service = "contract-args"
    platform.deploy_ok(service, contract_source, "--command", "python", "--args", "main.py,extra")
    assert runtime(platform, service)["argv"] == ["main.py", "extra"]


def test_should_run_in_the_containers_workingDir(
    platform: Platform, document: dict[str, Any], tmp_path: Path, instance_runtime: str
) -> None:
    # knative/serving workingdir_test: the process starts in workingDir. A source build's
    # code is /workspace, as Google's buildpacks put it.
    def edit(changed: dict[str, Any]) -> None:
        changed["metadata"]["name"] = "contract-workdir"
        container(changed)["workingDir"] = "/workspace/sub"
        container(changed)["command"] = ["python", "../main.py"]

    result = replaced(platform, tmp_path, document, edit)
    assert result.returncode == 0, describe(result)
    public(platform, "contract-workdir")
    cwd = runtime(platform, "contract-workdir")["cwd"]
    # A container sees the image's own paths; a process, the code's folder on this machine.
    if instance_runtime == "container":
        assert cwd == "/workspace/sub", cwd
    else:
        assert cwd.endswith("/app/sub"), cwd


def test_should_set_k_service_k_configuration_and_k_revision(
    platform: Platform, instance_of: str
) -> None:
    env = runtime(platform, instance_of)["env"]
    assert env["K_SERVICE"] == instance_of and env["K_CONFIGURATION"] == instance_of
    assert env["K_REVISION"].startswith(f"{instance_of}-0000")


def test_should_propagate_env_and_secret_key_refs(
    platform: Platform, contract_source: Path, tmp_path: Path
) -> None:
    # knative/serving envpropagation_test: env values and secretKeyRef values reach the app.
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret-value")
    created = platform.run("secrets", "create", "contract-secret", "--data-file", str(secret))
    assert created.returncode == 0 or "exists" in created.stderr, describe(created)
    service = "contract-env"
    platform.deploy_ok(
        service,
        contract_source,
        "--set-env-vars",
        "PLAIN=value",
        "--set-secrets",
        "FROM_SECRET=contract-secret:latest",
    )
    env = runtime(platform, service)["env"]
    assert env["PLAIN"] == "value" and env["FROM_SECRET"] == "s3cret-value"


# -- User, filesystems, cgroups, sysctl, hooks -----------------------------------------------


def test_must_fail_a_user_the_platform_does_not_allow(
    platform: Platform, document: dict[str, Any], tmp_path: Path, instance_runtime: str
) -> None:
    # The deployment fails, saying why, and the current revision keeps serving.
    if instance_runtime == "process":
        # Unsandboxed, instances run as the daemon's user: no runAsUser can be honoured.
        security = {"runAsUser": 2020}
        expected = "instances are not sandboxed here"
    else:
        security = {"runAsUser": 0, "runAsNonRoot": True}
        expected = "runAsUser: 0 is root, and runAsNonRoot is true"

    def edit(changed: dict[str, Any]) -> None:
        container(changed)["securityContext"] = security

    refused(platform, tmp_path, document, edit, expected)
    if instance_runtime == "sandbox" and os.geteuid() == 0:
        # Root without capabilities would still read what only root may read here.
        security = {"runAsUser": 0}
        refused(platform, tmp_path, document, edit, "the sandbox never runs an app as root")
    assert runtime(platform, "contract")["uid"] != 2020  # still serving, as before


def test_must_run_as_the_runAsUser(
    platform: Platform, document: dict[str, Any], tmp_path: Path, instance_runtime: str
) -> None:
    # knative/serving user_test TestMustRunAsUser: securityContext.runAsUser (and runAsGroup)
    # is the user the app runs as.
    if instance_runtime == "process":
        pytest.skip(
            "n.a.: unsandboxed, instances run as the daemon's user; the deploy refuses a "
            "runAsUser, saying so (test_must_fail_a_user_the_platform_does_not_allow)"
        )
    if instance_runtime == "sandbox" and os.geteuid() != 0:
        pytest.skip("n.a.: the sandbox runs apps as other users only when homerun is root")

    def edit(changed: dict[str, Any]) -> None:
        changed["metadata"]["name"] = "contract-user"
        container(changed)["securityContext"] = {
            "runAsUser": 2020,
            "runAsGroup": 2021,
            "runAsNonRoot": True,
        }

    result = replaced(platform, tmp_path, document, edit)
    assert result.returncode == 0, describe(result)
    public(platform, "contract-user")
    report = runtime(platform, "contract-user")
    assert (report["uid"], report["gid"]) == (2020, 2021), report
    assert report["tmp_writable"] is True
    described = platform.run("services", "describe", "contract-user", "--format", "yaml")
    shown = container(yaml.safe_load(described.stdout))["securityContext"]
    assert shown == {"runAsUser": 2020, "runAsGroup": 2021, "runAsNonRoot": True}, shown


def test_must_hold_the_privileges_the_security_context_asks(
    platform: Platform, document: dict[str, Any], tmp_path: Path, instance_runtime: str
) -> None:
    # Knative's secure pod defaults (the restricted Pod Security Standard): no privilege
    # escalation, every capability dropped (NET_BIND_SERVICE alone may come back), the
    # runtime's default seccomp profile. Where the runtime cannot give one, the deploy says so
    # and the current revision keeps serving.
    before = runtime(platform, "contract")

    def asking(security: dict[str, Any], name: str = "contract") -> Callable[[Any], None]:
        def edit(changed: dict[str, Any]) -> None:
            changed["metadata"]["name"] = name
            container(changed)["securityContext"] = security

        return edit

    if instance_runtime == "process":
        refused(
            platform,
            tmp_path,
            document,
            asking({"allowPrivilegeEscalation": False}),
            "securityContext.allowPrivilegeEscalation: false: instances are not sandboxed here",
        )
        assert runtime(platform, "contract")["instance"] == before["instance"]
        return
    restricted: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    if instance_runtime == "container":
        # podman gives a container's root capabilities, lets it gain more by setuid, and a
        # writable root.
        assert before["capabilities"]["CapEff"] != 0 and before["no_new_privs"] == "0", before
        assert before["root_writable"] is True, before
        restricted["capabilities"]["add"] = ["NET_BIND_SERVICE"]
        restricted["seccompProfile"] = {"type": "RuntimeDefault"}
    else:
        seccomp = {**restricted, "seccompProfile": {"type": "RuntimeDefault"}}
        refused(
            platform,
            tmp_path,
            document,
            asking(seccomp),
            "instances that are not containers run without a seccomp filter here",
        )
        assert runtime(platform, "contract")["instance"] == before["instance"]

    result = replaced(platform, tmp_path, document, asking(restricted, "contract-privileges"))
    assert result.returncode == 0, describe(result)
    public(platform, "contract-privileges")
    report = runtime(platform, "contract-privileges")
    assert report["no_new_privs"] == "1", report
    assert (report["root_writable"], report["tmp_writable"]) == (False, True), report
    capabilities = report["capabilities"]
    net_bind_service = 1 << 10
    if instance_runtime == "container":
        assert report["seccomp"] == "2", report  # a filter: podman's default profile
        assert capabilities["CapBnd"] == net_bind_service, capabilities
        assert capabilities["CapEff"] == net_bind_service, capabilities
    else:
        assert capabilities["CapEff"] == capabilities["CapPrm"] == 0, capabilities
        if os.geteuid() == 0:
            assert capabilities["CapBnd"] == 0, capabilities
    described = platform.run("services", "describe", "contract-privileges", "--format", "yaml")
    shown = container(yaml.safe_load(described.stdout))["securityContext"]
    assert shown == restricted, shown


def test_should_document_the_default_user(
    platform: Platform, instance_of: str, instance_runtime: str
) -> None:
    # knative/serving user_test: the app runs as the user the platform says it does.
    report = runtime(platform, instance_of)
    if instance_runtime == "sandbox" and os.geteuid() == 0:
        expected = revision_uid(report["env"]["K_REVISION"])  # the revision's own user
    elif instance_runtime == "container":
        expected = 0  # the image's USER; this one names none: root (in the container)
    else:
        expected = os.getuid()  # the daemon's
    assert (report["uid"], report["gid"]) == (expected, expected if expected else 0), report
    docs = (Path(__file__).resolve().parents[3] / "docs" / "knative.md").read_text()
    docs = " ".join(docs.split())  # lines wrapped anywhere
    for said in (
        "without the sandbox as the user that runs the daemon",
        "in the sandbox (homerun as root) as a user of their revision's own",
        "a container as its image's `USER`",
    ):
        assert said in docs, said


def test_must_provide_a_read_write_tmp(platform: Platform, instance_of: str) -> None:
    assert runtime(platform, instance_of)["tmp_writable"] is True


def cgroup_limits(platform: Platform, service: str) -> dict[str, dict[str, Any]]:
    response = platform.request(service, "GET", "/cgroups")
    assert response.status_code == 200, response.text
    files: dict[str, dict[str, Any]] = response.json()
    return files


@pytest.fixture(scope="module")
def limited(platform: Platform, contract_source: Path) -> str:
    """The contract app with --memory 256Mi --cpu 1: control groups that say so."""
    platform.ensure_deployed("contract-limited", contract_source, "--memory", "256Mi", "--cpu", "1")
    return "contract-limited"


def test_must_let_the_operator_select_and_configure_cgroups(
    platform: Platform, limited: str
) -> None:
    # knative/serving cgroup_test TestMustHaveCgroupConfigured: the instance's control groups
    # hold its limits (v1: memory.limit_in_bytes, cpu.cfs_quota_us / cpu.cfs_period_us; v2:
    # memory.max, cpu.max).
    files = cgroup_limits(platform, limited)
    memory = files.get("memory.max") or files.get("memory.limit_in_bytes")
    assert memory is not None and memory["value"] == str(256 * 1024 * 1024), files
    if "cpu.max" in files:
        assert files["cpu.max"]["value"] == "100000 100000", files
    else:
        assert files["cpu.cfs_quota_us"]["value"] == "100000", files
        assert files["cpu.cfs_period_us"]["value"] == "100000", files


def test_should_not_let_the_app_change_its_cgroups(
    platform: Platform, limited: str, instance_runtime: str, request: pytest.FixtureRequest
) -> None:
    # knative/serving cgroup_test TestShouldHaveCgroupReadOnly.
    if instance_runtime == "process" and os.geteuid() == 0:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="deliberately not held without the sandbox: the app runs as the "
                "daemon's user, root here, who may write them (docs/knative.md)",
            )
        )
    files = cgroup_limits(platform, limited)
    assert files, "no control group files seen"
    writable = [name for name, seen in files.items() if seen["writable"]]
    assert writable == [], f"the app could open {writable} for writing"


def test_should_not_expose_sysctls_to_the_developer(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        changed["spec"]["template"]["spec"]["securityContext"] = {
            "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]
        }

    refused(platform, tmp_path, document, edit, "spec.template.spec.securityContext")


def test_should_not_let_the_developer_configure_hooks(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        container(changed)["lifecycle"] = {"preStop": {"exec": {"command": ["true"]}}}

    refused(platform, tmp_path, document, edit, "lifecycle: not supported")


def test_should_not_set_the_terminal_property(
    platform: Platform, document: dict[str, Any], tmp_path: Path
) -> None:
    def edit(changed: dict[str, Any]) -> None:
        container(changed)["tty"] = True

    refused(platform, tmp_path, document, edit, "tty: not supported")
