"""`homerun jobs ...` over the fake client: what each command sends and prints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from homerun.cli import COMMANDS
from homerun.cli._commands import build_parser, parse
from homerun.cli._context import Context
from homerun.model.events import Failed
from homerun.model.jobs import ExecutionOverrides, TaskStatus
from homerun.model.views import TaskSummary

from .conftest import FakeClient, Run, execution_view


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("homerun.cli.executions.POLL_SECONDS", 0.0)


def test_create_sends_the_quickstart_settings_and_says_how_to_execute(
    run: Run, fake: FakeClient, app: Path
) -> None:
    result = run(
        "jobs", "create", "job-quickstart", "--source", str(app), "--tasks", "50",
        "--set-env-vars", "SLEEP_MS=10000,FAIL_RATE=0.5", "--max-retries", "10",
    )  # fmt: skip
    assert result.code == 0, result.err
    [(job, changes, settings, mode, schedule, zone)] = fake.called("deploy_job")
    assert (schedule, zone) == (None, None)
    assert (job, mode) == ("job-quickstart", "create")
    assert changes.source == str(app)
    assert changes.env.replace == {"SLEEP_MS": "10000", "FAIL_RATE": "0.5"}
    assert (settings.task_count, settings.max_retries, settings.parallelism) == (50, 10, None)
    assert "Job [job-quickstart] has successfully been created." in result.out
    assert result.out.rstrip().endswith("homerun jobs execute job-quickstart")


def test_an_image_is_sent_by_name_and_goes_without_a_source(run: Run, fake: FakeClient) -> None:
    result = run("jobs", "create", "report", "--image", "localhost/report:v1", "--tasks", "3")
    assert result.code == 0, result.err
    [(job, changes, settings, mode, *_)] = fake.called("deploy_job")
    assert (job, mode, changes.image, changes.source) == (
        "report",
        "create",
        "localhost/report:v1",
        None,
    )
    assert settings.task_count == 3
    both = run("jobs", "create", "report", "--image", "localhost/report", "--source", ".")
    assert both.code == 2 and "not allowed with argument" in both.err


def test_update_keeps_the_code_unless_given_a_source(run: Run, fake: FakeClient) -> None:
    result = run("jobs", "update", "report", "--parallelism", "2", "--task-timeout", "5m")
    assert result.code == 0, result.err
    [(_, changes, settings, mode, *_)] = fake.called("deploy_job")
    assert (mode, changes.source) == ("update", None)
    assert (settings.parallelism, settings.task_timeout_seconds) == (2, 300)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tasks", "0"], "--tasks: must be between 1 and 10000, got 0"),
        (["--max-retries", "11"], "--max-retries: must be between 0 and 10, got 11"),
        (["--task-timeout", "2d"], "--task-timeout: expected a duration"),
        (["--image", "gcr.io/p/Job"], "--image: 'gcr.io/p/Job' is not an image name"),
        (["--wait"], "--wait goes with --execute-now"),
    ],
)
def test_bad_flags_are_refused_before_the_daemon_is_asked(
    run: Run, fake: FakeClient, flags: list[str], message: str
) -> None:
    result = run("jobs", "update", "report", *flags)
    assert result.code == 1
    assert message in result.err
    assert fake.called("deploy_job") == []


def test_a_schedule_is_checked_then_sent_and_can_be_cleared(run: Run, fake: FakeClient) -> None:
    result = run(
        "jobs", "update", "report", "--schedule", "0 9 * * MON-FRI", "--time-zone", "Europe/Paris"
    )  # fmt: skip
    assert result.code == 0, result.err
    assert fake.called("deploy_job")[-1][4:] == ("0 9 * * MON-FRI", "Europe/Paris")
    assert run("jobs", "update", "report", "--clear-schedule").code == 0
    assert fake.called("deploy_job")[-1][4:] == ("", None)
    bad = run("jobs", "update", "report", "--schedule", "0 25 * * *")
    assert bad.code == 1 and "--schedule: hour '25' is not between 0 and 23" in bad.err
    zone = run("jobs", "update", "report", "--time-zone", "Paris")
    assert zone.code == 1 and "--time-zone: 'Paris' is not a time zone" in zone.err
    assert len(fake.called("deploy_job")) == 2


def test_a_failed_build_is_the_command_error(run: Run, fake: FakeClient, app: Path) -> None:
    fake.job_events = [Failed(message="no entrypoint found in /srv/report")]
    result = run("jobs", "deploy", "report", "--source", str(app))
    assert result.code == 1
    assert "ERROR: no entrypoint found in /srv/report" in result.err


def test_execute_starts_an_execution_and_says_how_to_see_it(run: Run, fake: FakeClient) -> None:
    result = run("jobs", "execute", "report")
    assert result.code == 0, result.err
    assert fake.called("execute_job") == [("report", ExecutionOverrides())]
    assert "Execution [report-x7k2p] has successfully started running." in result.out
    assert "homerun jobs executions describe report-x7k2p" in result.out


def test_execute_sends_its_overrides(run: Run, fake: FakeClient) -> None:
    result = run(
        "jobs", "execute", "report", "--tasks", "3", "--task-timeout", "30s",
        "--args=--day,monday", "--update-env-vars", "MODE=fast",
    )  # fmt: skip
    assert result.code == 0, result.err
    [(_, overrides)] = fake.called("execute_job")
    assert overrides == ExecutionOverrides(
        task_count=3, task_timeout_seconds=30, args=["--day", "monday"], env={"MODE": "fast"}
    )


def test_execute_wait_follows_the_execution_to_its_success(run: Run, fake: FakeClient) -> None:
    fake.execution_views = [
        execution_view(),
        execution_view(running=1, succeeded=2, pending=0),
        execution_view(
            status="succeeded",
            succeeded=3,
            running=0,
            pending=0,
            message="3 tasks completed successfully after 1 retry",
        ),
    ]
    result = run("jobs", "execute", "report", "--wait")
    assert result.code == 0, result.err
    assert "0/3 tasks done, 2 running" in result.out
    assert "2/3 tasks done, 1 running" in result.out
    assert (
        "Execution [report-x7k2p] has successfully completed: 3 tasks completed "
        "successfully after 1 retry." in result.out
    )


def test_execute_wait_fails_with_the_executions_reason(run: Run, fake: FakeClient) -> None:
    fake.execution_views = [
        execution_view(),
        execution_view(
            status="failed",
            failed=1,
            running=0,
            pending=0,
            succeeded=2,
            message="1 of 3 tasks failed: task 1: exit code 1 (4 attempts)",
        ),
    ]
    result = run("jobs", "execute", "report", "--wait")
    assert result.code == 1
    assert "execution report-x7k2p failed: 1 of 3 tasks failed: task 1: exit code 1" in result.err
    assert "homerun jobs logs read report --execution report-x7k2p" in result.err


def test_deploy_execute_now_runs_it_once_deployed(run: Run, fake: FakeClient, app: Path) -> None:
    fake.execution_views = [execution_view(status="succeeded", message="3 tasks completed")]
    result = run("jobs", "deploy", "report", "--source", str(app), "--execute-now", "--wait")
    assert result.code == 0, result.err
    assert [name for name, _ in fake.calls][-2:] == ["deploy_job", "execute_job"]
    assert "has successfully completed" in result.out


def test_describe_list_and_delete(run: Run, fake: FakeClient) -> None:
    described = run("jobs", "describe", "report")
    assert described.code == 0, described.err
    assert "Tasks:         3" in described.out
    assert "Parallelism:   as many as possible" in described.out
    assert "Task timeout:  10m" in described.out
    assert "Executed 1 time(s); last with execution report-x7k2p (succeeded)" in described.out
    assert "Schedule:" not in described.out
    listed = run("jobs", "list")
    assert listed.out.splitlines()[1].split()[:4] == ["report", "3", "report-x7k2p", "succeeded"]
    assert run("jobs", "delete", "report", "-q").out == "Deleted job [report].\n"
    missing = run("jobs", "describe", "nope")
    assert missing.code == 1 and "job 'nope' not found" in missing.err


def test_executions_commands(run: Run, fake: FakeClient) -> None:
    listed = run("jobs", "executions", "list", "--job", "report")
    assert listed.code == 0 and fake.called("executions") == [("report",)]
    row = listed.out.splitlines()[1].split()
    assert row[:5] == ["report-x7k2p", "report", "running", "2", "0/3"]
    fake.execution_views = [
        execution_view(
            status="failed",
            message="1 of 3 tasks failed: task 1: exit code 1 (4 attempts)",
            tasks=[
                TaskSummary(
                    index=1,
                    status=TaskStatus.FAILED,
                    attempts=4,
                    failures=4,
                    last_failure="exit code 1",
                    started_at=1.0,
                    ended_at=2.0,
                    exit_status=1,
                )
            ],
        )
    ]
    described = run("jobs", "executions", "describe", "report-x7k2p")
    assert "Result:        1 of 3 tasks failed" in described.out
    assert "Task 1:        failed after 4 attempt(s): exit code 1" in described.out
    cancelled = run("jobs", "executions", "cancel", "report-x7k2p", "-q")
    assert cancelled.out == "Execution [report-x7k2p] is being cancelled.\n"
    deleted = run("jobs", "executions", "delete", "report-x7k2p", "-q")
    assert deleted.out == "Deleted execution [report-x7k2p].\n"


def test_logs_read_names_execution_task_and_attempt(run: Run, fake: FakeClient) -> None:
    result = run("jobs", "logs", "read", "report", "--execution", "report-x7k2p", "--task", "3")
    assert result.code == 0, result.err
    assert fake.called("job_logs") == [("report", 50, "report-x7k2p", 3, None)]
    assert result.out == (
        "2026-11-25T10:00:00.000000Z DEFAULT  report-x7k2p task 3 (attempt 1): Completed Task #3.\n"
    )
    refused = run("jobs", "logs", "read", "report", "--task", "3")
    assert refused.code == 1 and "--task needs --execution" in refused.err


def test_describe_yaml_then_replace_sends_the_document_as_a_deploy(
    run: Run, fake: FakeClient, tmp_path: Path, app: Path
) -> None:
    described = run("jobs", "describe", "report", "--format", "yaml")
    assert described.code == 0, described.err
    document = yaml.safe_load(described.out)
    assert document["kind"] == "Job" and document["metadata"]["name"] == "report"
    assert document["metadata"]["annotations"]["homerun.dev/source"] == "/srv/report"
    document["metadata"]["annotations"]["homerun.dev/source"] = str(app)
    document["spec"]["template"]["spec"]["taskCount"] = 7
    edited = tmp_path / "job.yaml"
    edited.write_text(yaml.safe_dump(document))
    replaced = run("jobs", "replace", str(edited))
    assert replaced.code == 0, replaced.err
    [(job, changes, settings, mode, schedule, zone)] = fake.called("deploy_job")
    assert (job, mode, schedule) == ("report", "deploy", "")
    assert settings.task_count == 7 and changes.env.replace == {"SLEEP_MS": "10"}
    # The fake's job has no artifact digest: the code is built again from its folder.
    assert changes.source == str(app)


def test_replace_of_a_bad_document_names_the_field(
    run: Run, fake: FakeClient, tmp_path: Path
) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("apiVersion: run.googleapis.com/v1\nkind: Job\nmetadata: {name: report}\n")
    result = run("jobs", "replace", str(bad))
    assert result.code == 1
    assert "is not a valid Cloud Run Job (1 problem):\n  spec: required" in result.err
    assert not fake.called("deploy_job")


def test_logs_tail_polls_after_the_last_entry_until_interrupted(
    fake: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    polls: list[float] = []

    def sleep(seconds: float) -> None:  # simulated time: the third poll is a Ctrl-C
        polls.append(seconds)
        if len(polls) == 3:
            raise KeyboardInterrupt

    invocation = parse(
        build_parser(COMMANDS, "0"),
        ["jobs", "logs", "tail", "report", "--execution", "report-x7k2p"],
    )
    assert invocation.command is not None
    with pytest.raises(KeyboardInterrupt):
        invocation.command.handler(invocation.arguments, Context(fake, sleep=sleep))  # type: ignore[arg-type]
    assert capsys.readouterr().out.count("Completed Task #3.") == 1
    first, *rest = fake.called("job_logs")
    assert first == ("report", 20, "report-x7k2p", None, None) and len(rest) == 2
    assert all(call[4] == "2026-11-25T10:00:00.000000Z" for call in rest)
