"""Jobs and their executions over a fake runtime: each task an "instance" the test ends with
the exit status it wants, so retries, parallelism, timeouts, cancellation and a daemon
restart run in milliseconds with the real store and control plane."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from fakes import FakeInstance

from homerun.config import Settings
from homerun.control.job_artifacts import JobArtifacts
from homerun.control.job_logs import log_name
from homerun.control.job_plan import JobRequest
from homerun.control.tasks import Tasks
from homerun.errors import HomerunError, InvalidSpec
from homerun.model.engine import ContainerSpec, Engine
from homerun.model.events import Failed, JobDeployed, JobEvent, Phase
from homerun.model.images import BuildRequest, Built
from homerun.model.jobs import (
    Attempt,
    ExecutionOverrides,
    ExecutionStatus,
    TaskSettingsChanges,
    TaskStatus,
)
from homerun.spec import EnvChanges, RevisionChanges
from homerun.store import ExecutionRecord

from .conftest import JobsPlane

JOB = "report"


def run(
    make_jobs_plane: Callable[..., JobsPlane], scenario: Callable[[JobsPlane], Awaitable[None]]
) -> None:
    async def main() -> None:
        plane = make_jobs_plane()
        try:
            await scenario(plane)
        finally:
            await plane.control.close()

    asyncio.run(main())


async def deploy(plane: JobsPlane, mode: str = "deploy", **settings: Any) -> list[JobEvent]:
    env = settings.pop("env", None)
    request = JobRequest(
        job=settings.pop("job", JOB),
        changes=RevisionChanges(
            source=str(plane.source), env=EnvChanges(update=env) if env else EnvChanges()
        ),
        settings=TaskSettingsChanges(**settings),
        mode=mode,  # type: ignore[arg-type]
    )
    return [event async for event in plane.control.jobs.deploy(request)]


async def deployed(plane: JobsPlane, **settings: Any) -> JobDeployed:
    events = await deploy(plane, **settings)
    assert isinstance(events[-1], JobDeployed), events
    return events[-1]


def execute(plane: JobsPlane, **overrides: Any) -> ExecutionRecord:
    return plane.control.jobs.executions.execute(JOB, ExecutionOverrides(**overrides))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the plane's tasks run until `condition` holds (no real time passes)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def running(plane: JobsPlane) -> list[FakeInstance]:
    return [instance for instance in plane.runtime.started if instance.returncode is None]


def status(plane: JobsPlane, execution: ExecutionRecord) -> ExecutionStatus:
    return plane.store.execution(execution.name).status


async def finished(plane: JobsPlane, execution: ExecutionRecord) -> ExecutionRecord:
    await until(lambda: status(plane, execution) != ExecutionStatus.RUNNING, "the end")
    return plane.store.execution(execution.name)


async def end_next(plane: JobsPlane, exit_status: int, started: int) -> None:
    """Wait for the `started`-th start, then end that task with `exit_status`."""
    await until(lambda: len(plane.runtime.started) >= started, f"start #{started}")
    plane.runtime.started[started - 1].exit(exit_status)


def test_each_task_runs_with_cloud_run_job_env_and_no_port(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        done = await deployed(plane, task_count=2, env={"MODE": "full"})
        assert done.created and done.entrypoint == "python app.py"
        execution = execute(plane)
        assert execution.name.startswith(f"{JOB}-") and len(execution.name) == len(JOB) + 6
        await until(lambda: len(plane.runtime.specs) == 2, "both tasks start")
        first, second = plane.runtime.specs
        assert first.env["CLOUD_RUN_JOB"] == JOB
        assert first.env["CLOUD_RUN_EXECUTION"] == execution.name
        assert (first.env["CLOUD_RUN_TASK_INDEX"], second.env["CLOUD_RUN_TASK_INDEX"]) == ("0", "1")
        assert first.env["CLOUD_RUN_TASK_ATTEMPT"] == "0"
        assert first.env["CLOUD_RUN_TASK_COUNT"] == "2"
        assert first.env["MODE"] == "full" and first.env["PATH"] == "/usr/bin"
        assert not {"PORT", "K_SERVICE", "K_REVISION"} & set(first.env)
        # Service URLs resolve in tasks as in instances (runtime/_site).
        assert first.env["HOMERUN_HOSTS"].endswith("/network/hosts")
        assert first.env["PYTHONPATH"].endswith("/homerun/runtime/_site")
        assert first.argv == ["python", "app.py"] and first.cwd.is_dir()
        # google-auth finds the metadata server, which answers each task as the job's account.
        assert first.env["GCE_METADATA_HOST"] == first.env["GCE_METADATA_IP"] == "127.0.0.1:9"
        pids = [instance.pid for instance in running(plane)]
        assert plane.control.members() == dict.fromkeys(pids, f"serviceAccount:{JOB}")
        assert len(plane.registered) == 2  # pids recorded: a restart kills what a crash left
        for instance in running(plane):
            instance.exit(0)
        ended = await finished(plane, execution)
        assert ended.status == ExecutionStatus.SUCCEEDED
        assert ended.message == "2 tasks completed successfully"
        assert plane.registered == {} and plane.control.members() == {}

    run(make_jobs_plane, scenario)


def test_parallelism_bounds_the_tasks_running_at_once(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=5, parallelism=2)
        execution = execute(plane)
        await until(lambda: len(plane.runtime.started) == 2, "two tasks start")
        for oldest in range(5):
            plane.runtime.started[oldest].exit(0)
            starts = min(oldest + 3, 5)
            await until(lambda: len(plane.runtime.started) == starts, f"{starts} starts")  # noqa: B023
            assert len(running(plane)) <= 2
        assert (await finished(plane, execution)).status == ExecutionStatus.SUCCEEDED
        indexes = [spec.env["CLOUD_RUN_TASK_INDEX"] for spec in plane.runtime.specs]
        assert indexes == ["0", "1", "2", "3", "4"]

    run(make_jobs_plane, scenario)


def test_a_failed_task_is_retried_as_its_next_attempt_until_it_succeeds(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=1, max_retries=2)
        execution = execute(plane)
        await until(lambda: len(plane.runtime.outputs) == 1, "the first attempt")
        plane.runtime.outputs[0]("stderr", "ValueError: flaky")
        await end_next(plane, 1, 1)
        await end_next(plane, 2, 2)
        await end_next(plane, 0, 3)
        ended = await finished(plane, execution)
        assert ended.status == ExecutionStatus.SUCCEEDED
        assert ended.message == "1 task completed successfully after 2 retries"
        attempts = [spec.env["CLOUD_RUN_TASK_ATTEMPT"] for spec in plane.runtime.specs]
        assert attempts == ["0", "1", "2"]
        recorded = plane.store.attempts(execution.name)[0]
        assert [attempt.failure for attempt in recorded] == [
            "exit code 1; its last line: ValueError: flaky",
            "exit code 2",
            None,
        ]

    run(make_jobs_plane, scenario)


def test_an_execution_whose_tasks_all_fail_says_which_and_why(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=2, max_retries=1)
        plane.runtime.fail = True  # each start prints a line and exits 1
        ended = await finished(plane, execute(plane))
        assert ended.status == ExecutionStatus.FAILED
        last_line = "its last line: ModuleNotFoundError: No module named 'flask'"
        assert ended.message == (
            f"2 of 2 tasks failed: task 0: exit code 1; {last_line} (2 attempts); "
            f"task 1: exit code 1; {last_line} (2 attempts)"
        )
        described = plane.control.jobs.views.execution(ended.name)
        assert [task.status for task in described.tasks] == [TaskStatus.FAILED] * 2
        assert (described.failed, described.retries) == (2, 2)

    run(make_jobs_plane, scenario)


def test_a_program_that_cannot_start_fails_its_task_saying_so(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, max_retries=0)
        plane.runtime.unstartable = FileNotFoundError(2, "No such file or directory")
        ended = await finished(plane, execute(plane))
        assert ended.message == (
            "1 of 1 task failed: task 0: cannot start python: No such file or directory (1 attempt)"
        )

    run(make_jobs_plane, scenario)


def test_a_task_past_its_timeout_is_stopped_and_counts_as_failed(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_timeout_seconds=10, max_retries=0)
        execution = execute(plane)
        await until(lambda: len(running(plane)) == 1, "the task starts")
        plane.clock.advance(11)
        plane.control.jobs.executions.wake()
        ended = await finished(plane, execution)
        assert plane.runtime.started[0].signals == [signal.SIGTERM]
        assert ended.message == (
            "1 of 1 task failed: task 0: timed out after 10s (--task-timeout) (1 attempt)"
        )

    run(make_jobs_plane, scenario)


def test_cancelling_stops_the_running_tasks_and_starts_no_other(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=3, parallelism=1)
        execution = execute(plane)
        await end_next(plane, 0, 1)
        await until(lambda: len(running(plane)) == 1, "task 1 starts")
        plane.control.jobs.executions.cancel(execution.name)
        ended = await finished(plane, execution)
        assert ended.status == ExecutionStatus.CANCELLED
        assert ended.message == "cancelled: 1 of 3 tasks had completed successfully"
        assert len(plane.runtime.started) == 2
        described = plane.control.jobs.views.execution(ended.name)
        statuses = [task.status for task in described.tasks]
        assert statuses == [TaskStatus.SUCCEEDED, TaskStatus.CANCELLED, TaskStatus.CANCELLED]
        try:
            plane.control.jobs.executions.cancel(execution.name)
        except InvalidSpec as error:
            assert "has already cancelled" in str(error)
        else:
            raise AssertionError("a second cancel should be refused")

    run(make_jobs_plane, scenario)


def test_an_execution_resumes_after_a_restart_without_running_done_tasks_again(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(first: JobsPlane) -> None:
        await deployed(first, task_count=3, parallelism=2)
        execution = execute(first)
        await end_next(first, 0, 1)  # task 0 succeeds; tasks 1 and 2 run
        await until(lambda: len(running(first)) == 2, "tasks 1 and 2 run")
        await first.control.close()  # `homerun down`: running tasks stop, recorded interrupted
        assert status(first, execution) == ExecutionStatus.RUNNING
        # A daemon killed outright leaves an attempt recorded as running: task 2's, here.
        first.store.record_attempt(execution.name, 2, Attempt(number=1, started_at=1.0))

        second = make_jobs_plane()
        try:
            await second.control.restore()
            await until(lambda: len(second.runtime.started) == 2, "tasks 1 and 2 again")
            indexes = [spec.env["CLOUD_RUN_TASK_INDEX"] for spec in second.runtime.specs]
            attempts = [spec.env["CLOUD_RUN_TASK_ATTEMPT"] for spec in second.runtime.specs]
            assert (indexes, attempts) == (["1", "2"], ["1", "2"])
            for instance in running(second):
                instance.exit(0)
            ended = await finished(second, execution)
            assert ended.status == ExecutionStatus.SUCCEEDED
            recorded = second.store.attempts(execution.name)
            assert [a.interrupted for a in recorded[2]] == [True, True, False]
            entries = await second.control.jobs.views.logs(JOB, 50, execution=execution.name)
            assert any("resumes after a daemon restart" in e["message"] for e in entries)
        finally:
            await second.control.close()

    run(make_jobs_plane, scenario)


def test_an_execution_keeps_its_settings_when_the_job_is_updated(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=1)
        execution = execute(plane)
        events = await deploy(plane, mode="update", task_count=4, env={"MODE": "new"})
        assert isinstance(events[-1], JobDeployed) and events[-1].generation == 2
        await end_next(plane, 0, 1)
        ended = await finished(plane, execution)
        assert ended.settings.task_count == 1 and ended.status == ExecutionStatus.SUCCEEDED
        assert plane.store.job(JOB).settings.task_count == 4

    run(make_jobs_plane, scenario)


def test_execute_overrides_tasks_env_and_args_for_one_execution(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=5, parallelism=5)
        execution = execute(plane, task_count=1, env={"DAY": "monday"}, args=["--fast"])
        await until(lambda: len(plane.runtime.specs) == 1, "the task starts")
        spec = plane.runtime.specs[0]
        assert spec.argv == ["python", "app.py", "--fast"] and spec.env["DAY"] == "monday"
        assert spec.env["CLOUD_RUN_TASK_COUNT"] == "1"
        assert execution.settings.parallelism == 1
        plane.runtime.started[0].exit(0)
        await finished(plane, execution)
        assert plane.store.job(JOB).settings.task_count == 5

    run(make_jobs_plane, scenario)


def test_task_output_is_logged_per_execution_and_task(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane, task_count=2)
        execution = execute(plane)
        await until(lambda: len(plane.runtime.outputs) == 2, "both tasks start")
        plane.runtime.outputs[0]("stdout", "task zero here")
        plane.runtime.outputs[1]("stdout", '{"severity": "ERROR", "message": "task one broke"}')
        views = plane.control.jobs.views
        entries = await views.logs(JOB, 50, execution=execution.name, task=1)
        assert [(e["severity"], e["message"], e["attempt"]) for e in entries] == [
            ("ERROR", "task one broke", 0)
        ]
        every = await views.logs(JOB, 50)
        assert {"task zero here", "task one broke"} <= {e["message"] for e in every}
        assert every[0]["message"].startswith(f"Job {JOB} created")

    run(make_jobs_plane, scenario)


def test_a_finished_execution_has_its_tasks_last_lines_on_disk(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    """Once an execution is over, its log file holds every line its tasks printed, without
    waiting for the periodic flush: a reader of the file right after `execute --wait` misses
    nothing."""

    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane)
        execution = execute(plane)
        await until(lambda: len(plane.runtime.outputs) == 1, "the task starts")
        plane.runtime.outputs[0]("stdout", "the task's last line")
        plane.runtime.started[0].exit(0)
        await finished(plane, execution)
        written = plane.logs.read_written(log_name(JOB), limit=50)
        assert "the task's last line" in [entry["message"] for entry in written]

    run(make_jobs_plane, scenario)


def test_deleting_a_job_cancels_its_running_execution_and_removes_it_all(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane)
        execute(plane)
        await until(lambda: len(running(plane)) == 1, "the task starts")
        await plane.control.jobs.delete(JOB)
        assert running(plane) == []
        assert not plane.store.has_job(JOB) and plane.store.executions() == []
        assert not (plane.source.parent / "home" / "jobs" / "artifacts" / JOB).exists()

    run(make_jobs_plane, scenario)


def test_create_update_and_settings_are_checked_before_anything_is_built(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        events = await deploy(plane, mode="update")
        assert isinstance(events[-1], Failed) and "create it with" in events[-1].message
        events = await deploy(plane, task_count=2, parallelism=3)
        assert isinstance(events[-1], Failed)
        assert events[-1].message.startswith("--parallelism: 3 is more than the job's 2 task")
        events = await deploy(plane, env={"CLOUD_RUN_TASK_INDEX": "7"})
        assert isinstance(events[-1], Failed) and "is reserved" in events[-1].message
        assert not plane.store.has_job(JOB)
        await deployed(plane)
        events = await deploy(plane, mode="create")
        assert isinstance(events[-1], Failed) and "already exists" in events[-1].message
        again = await deploy(plane, mode="update")
        assert isinstance(again[-1], JobDeployed) and again[-1].generation == 2  # --source
        unchanged = await plane_update_without_source(plane)
        assert unchanged.unchanged and unchanged.generation == 2

    run(make_jobs_plane, scenario)


async def plane_update_without_source(plane: JobsPlane) -> JobDeployed:
    request = JobRequest(job=JOB, mode="update")
    events = [event async for event in plane.control.jobs.deploy(request)]
    assert isinstance(events[-1], JobDeployed), events
    return events[-1]


def test_deleting_a_running_execution_is_refused(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await deployed(plane)
        execution = execute(plane)
        try:
            await plane.control.jobs.executions.delete(execution.name)
        except HomerunError as error:
            assert "cancel it first" in str(error)
        else:
            raise AssertionError("deleting a running execution should be refused")
        await end_next(plane, 0, 1)
        await finished(plane, execution)
        await plane.control.jobs.executions.delete(execution.name)
        assert plane.control.jobs.views.executions(JOB) == []

    run(make_jobs_plane, scenario)


# -- jobs from images -----------------------------------------------------------------------

# An engine the plane never calls: the tests' images are in homerun's store or built by the
# fake build (a source with ENGINE_IMAGE), and the fake runtime starts no container.
ENGINE = Engine(name="podman", program="/nonexistent/podman", version="0-test")
PODMAN_IMAGE = "sha256:" + "ab" * 32


async def submitted(plane: JobsPlane, tag: str) -> None:
    request = BuildRequest(source=str(plane.source), tag=tag)
    events = [event async for event in plane.control.images.submit(request)]
    assert isinstance(events[-1], Built), events


async def deploy_image(plane: JobsPlane, image: str, **changes: Any) -> list[JobEvent]:
    request = JobRequest(
        job=JOB,
        changes=RevisionChanges(image=image, **changes),
        settings=TaskSettingsChanges(task_count=2),
    )
    return [event async for event in plane.control.jobs.deploy(request)]


def test_a_job_from_an_image_of_the_store_runs_its_artifact_as_processes(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await submitted(plane, "localhost/report:v1")
        events = await deploy_image(plane, "localhost/report:v1")
        assert isinstance(events[-1], JobDeployed) and events[-1].created, events
        phases = [event.message for event in events if isinstance(event, Phase)]
        assert any("Image localhost/report:v1 is localhost/report@sha256:" in p for p in phases)
        image = plane.store.job(JOB).template.image
        assert image is not None and image.startswith("localhost/report@sha256:")
        again = await deploy_image(plane, "localhost/report:v1")
        assert isinstance(again[-1], JobDeployed) and again[-1].unchanged
        refused = await deploy_image(plane, "localhost/report:v1", command=["python", "x.py"])
        assert isinstance(refused[-1], Failed)
        assert "cannot change what an image built without a container engine runs" in (
            refused[-1].message
        )
        execution = execute(plane)
        await until(lambda: len(plane.runtime.specs) == 2, "both tasks start")
        first = plane.runtime.specs[0]
        assert first.container is None and first.argv == ["python", "app.py"]
        assert (first.cwd / "app.py").is_file() and first.env["PATH"] == "/usr/bin"
        for instance in running(plane):
            instance.exit(0)
        assert (await finished(plane, execution)).status == ExecutionStatus.SUCCEEDED

    run(make_jobs_plane, scenario)


def test_an_unknown_or_malformed_image_is_refused_saying_what_to_do(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        await submitted(plane, "localhost/report:v1")
        unknown = await deploy_image(plane, "localhost/reprot:v1")
        assert isinstance(unknown[-1], Failed)
        assert "--image: there is no image localhost/reprot:v1 in homerun's image store" in (
            unknown[-1].message
        )
        assert "Did you mean localhost/report:v1?" in unknown[-1].message
        malformed = await deploy_image(plane, "localhost/Report")
        assert isinstance(malformed[-1], Failed)
        assert "--image: 'localhost/Report' is not an image name" in malformed[-1].message
        assert not plane.store.has_job(JOB)

    run(make_jobs_plane, scenario)


def test_a_job_podman_built_runs_each_task_as_a_container_with_its_limits(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        (plane.source / "ENGINE_IMAGE").write_text(PODMAN_IMAGE)
        await deployed(plane, task_count=2, max_retries=0)
        events = await deploy(plane, max_retries=0)  # --source again: the same build
        assert isinstance(events[-1], JobDeployed)
        changed = JobRequest(
            job=JOB,
            changes=RevisionChanges(command=["sh"], args=["-c", "exit 3"], memory="256Mi"),
            mode="update",
        )
        events = [event async for event in plane.control.jobs.deploy(changed)]
        assert isinstance(events[-1], JobDeployed), events
        phases = [event.message for event in events if isinstance(event, Phase)]
        assert any("no rebuild" in phase for phase in phases), phases  # replaced at run time
        execution = execute(plane)
        await until(lambda: len(plane.runtime.specs) == 2, "both tasks start")
        first = plane.runtime.specs[0]
        assert first.container == ContainerSpec(
            image=PODMAN_IMAGE, command=("sh",), args=("-c", "exit 3"), memory="256Mi"
        )
        assert first.port == 0 and first.revision == execution.name
        assert first.env["CLOUD_RUN_TASK_INDEX"] == "0" and first.env["CLOUD_RUN_JOB"] == JOB
        # A container has its image's PATH and settings: none of the daemon's.
        assert not {"PATH", "PYTHONUNBUFFERED"} & set(first.env)
        for line in ("starting", "reading input", "no such table: orders"):
            plane.runtime.outputs[0]("stderr", line)
        plane.runtime.started[0].exit(3)
        plane.runtime.started[1].exit(0)
        ended = await finished(plane, execution)
        assert ended.status == ExecutionStatus.FAILED
        assert "its last lines: starting | reading input | no such table: orders" in (
            ended.message or ""
        ), ended.message
        # The services' collection of unused podman images keeps the job's.
        artifacts = JobArtifacts(
            Settings().paths(plane.source.parent / "home"), plane.store, Tasks()
        )
        assert artifacts.engine_images() == {PODMAN_IMAGE}

    run(lambda: make_jobs_plane(engine=ENGINE), scenario)


def test_without_a_container_engine_a_podman_image_task_fails_saying_so(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        # Built while podman was there; container-engine: none since.
        (plane.source / "ENGINE_IMAGE").write_text(PODMAN_IMAGE)
        await deployed(plane, max_retries=0)
        ended = await finished(plane, execute(plane))
        assert ended.status == ExecutionStatus.FAILED
        assert "this homerun runs without one now (config.yaml: container-engine)" in (
            ended.message or ""
        ), ended.message
        assert plane.runtime.specs == []

    run(make_jobs_plane, scenario)
