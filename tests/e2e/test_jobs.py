"""Jobs on a real daemon: tasks are real processes (tests/apps/job_tasks) that fail as told,
retry, respect parallelism, and an execution outlives a daemon killed in its middle; a job on a
one-minute schedule, Cloud Run's Job YAML through describe and replace, and Django's Procfile
`migrate:` line run as a job from the service's source."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from .harness import (
    APPS,
    HOMERUN,
    Platform,
    describe,
    process_alive,
    process_environ,
    wait_until_dead,
)

# The dashboard's browser fixtures (a page on Chromium that records the console's errors).
from .test_dashboard import Watched, browser, dashboard_url, watched  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = APPS / "job_tasks"
EXECUTION_SECONDS = 120.0


def create(platform: Platform, job: str, *flags: str) -> None:
    """`jobs create` of tests/apps/job_tasks."""
    result = platform.run("jobs", "create", job, "--source", str(APP), *flags, timeout=270)
    assert result.returncode == 0, describe(result)
    assert f"Job [{job}] has successfully been created." in result.stdout


def execution_of(result_stdout: str) -> str:
    """The execution's name in `jobs execute`'s output: Execution [NAME] has ..."""
    return result_stdout.split("Execution [", 1)[1].split("]", 1)[0]


def described(platform: Platform, execution: str) -> dict[str, Any]:
    result = platform.run("jobs", "executions", "describe", execution, "--format", "json")
    assert result.returncode == 0, describe(result)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def wait_for(platform: Platform, execution: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + EXECUTION_SECONDS
    while time.monotonic() < deadline:
        answer = described(platform, execution)
        if answer["status"] != "running":
            assert answer["status"] == status, answer
            return answer
        time.sleep(0.2)
    pytest.fail(f"{execution} still runs after {EXECUTION_SECONDS}s: {answer}")


def attempts(platform: Platform, job: str) -> dict[tuple[int, int], dict[str, Any]]:
    """(index, attempt) -> what that attempt recorded (its end's record once it has one), from
    the job's log file."""
    found = {}
    log = platform.home / "logs" / f"{job}.job.jsonl"
    for path in (log.with_suffix(".jsonl.1"), log):
        for line in path.read_bytes().splitlines() if path.exists() else []:
            report = json.loads(line).get("jsonPayload", {}).get("record")
            if report is not None:
                found[(report["index"], report["attempt"])] = report
    return found


def task_processes(execution: str, index: int) -> list[int]:
    """Host pids of the processes of an execution's task (the sandbox's included), by their
    environment: a task in a sandbox sees its own PID namespace's pids."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            env = process_environ(int(entry.name))
            if env.get("CLOUD_RUN_EXECUTION") == execution and env.get(
                "CLOUD_RUN_TASK_INDEX"
            ) == str(index):
                found.append(int(entry.name))
    return [pid for pid in found if process_alive(pid)]


def test_tasks_that_fail_at_first_are_retried_to_success(
    platform: Platform, tmp_path: Path
) -> None:
    create(platform, "retries", "--tasks", "4", "--max-retries", "1",
           "--set-env-vars", "FAIL_MODE=odd-first")  # fmt: skip
    result = platform.run("jobs", "execute", "retries", "--wait", timeout=EXECUTION_SECONDS)
    assert result.returncode == 0, describe(result)
    assert "has successfully completed: 4 tasks completed successfully after 2 retries" in (
        result.stdout
    )
    execution = execution_of(result.stdout)
    ran = attempts(platform, "retries")
    assert sorted(ran) == [(0, 0), (1, 0), (1, 1), (2, 0), (3, 0), (3, 1)]
    first = ran[(0, 0)]["env"]
    assert first["CLOUD_RUN_JOB"] == "retries" and first["CLOUD_RUN_EXECUTION"] == execution
    assert first["CLOUD_RUN_TASK_COUNT"] == "4"
    assert first["PORT"] is None and first["K_SERVICE"] is None  # a task does not listen
    answer = described(platform, execution)
    assert (answer["succeeded"], answer["retries"]) == (4, 2)
    logs = platform.run(
        "jobs", "logs", "read", "retries", "--execution", execution, "--task", "1"
    )  # fmt: skip
    assert logs.returncode == 0, describe(logs)
    assert "ERROR" in logs.stdout and "Task #1, Attempt #0 failed." in logs.stdout
    assert "Completed Task #1." in logs.stdout
    # `jobs logs tail` shows the newest entries, then follows; it runs until stopped.
    tail = subprocess.Popen(
        [*HOMERUN, "jobs", "logs", "tail", "retries", "--execution", execution],
        env=platform.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert tail.stdout is not None
        seen = [tail.stdout.readline() for _ in range(3)]
        assert all(execution in line for line in seen), seen
    finally:
        tail.kill()
        tail.communicate(timeout=10)  # reaps it and closes its pipe


def test_an_execution_whose_tasks_all_fail_fails_naming_them(
    platform: Platform, tmp_path: Path
) -> None:
    create(platform, "hopeless", "--tasks", "2", "--max-retries", "1",
           "--set-env-vars", "FAIL_MODE=always")  # fmt: skip
    result = platform.run("jobs", "execute", "hopeless", "--wait", timeout=EXECUTION_SECONDS)
    assert result.returncode == 1, describe(result)
    assert "failed: 2 of 2 tasks failed: task 0: exit code 1; its last lines: Starting " in (
        result.stderr
    )
    assert (
        "task 1: exit code 1; its last lines: Starting Task #1, Attempt #1... | "
        "Task #1, Attempt #1 failed. (2 attempts)"
    ) in result.stderr, result.stderr
    assert sorted(attempts(platform, "hopeless")) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    listed = platform.run("jobs", "executions", "list", "--job", "hopeless")
    assert " failed " in listed.stdout, describe(listed)


def test_parallelism_bounds_how_many_tasks_run_at_once(platform: Platform, tmp_path: Path) -> None:
    create(platform, "two-at-a-time", "--tasks", "6", "--parallelism", "2",
           "--set-env-vars", "SLEEP_MS=400")  # fmt: skip
    result = platform.run("jobs", "execute", "two-at-a-time", "--wait", timeout=EXECUTION_SECONDS)
    assert result.returncode == 0, describe(result)
    ran = attempts(platform, "two-at-a-time").values()
    assert len(ran) == 6
    # Sweep the start and end times: the most tasks alive at one moment.
    events = sorted([(r["start"], 1) for r in ran] + [(r["end"], -1) for r in ran])
    alive = most = 0
    for _, change in events:
        alive += change
        most = max(most, alive)
    assert most == 2


@pytest.mark.parametrize("stop", ["kill", "down"])
def test_an_execution_survives_a_stopped_daemon_and_resumes(
    own_platform: Platform, tmp_path: Path, stop: str
) -> None:
    """SIGKILL (the task dies with the daemon; the next start finds its attempt still
    recorded as running) or `homerun down` (the task is stopped and recorded interrupted)."""
    create(own_platform, "survivor", "--tasks", "3", "--parallelism", "1",
           "--set-env-vars", "WAIT_INDEX=1")  # fmt: skip
    result = own_platform.run("jobs", "execute", "survivor")
    assert result.returncode == 0, describe(result)
    execution = execution_of(result.stdout)
    deadline = time.monotonic() + 60
    while (1, 0) not in attempts(own_platform, "survivor") and time.monotonic() < deadline:
        time.sleep(0.05)
    # Task 0 is done; task 1's first attempt waits until it is stopped.
    assert (0, 0) in attempts(own_platform, "survivor")
    blocked = task_processes(execution, 1)
    assert blocked, "task 1 does not run"

    if stop == "kill":
        own_platform.kill()
    else:
        assert own_platform.down().returncode == 0
    for pid in blocked:
        assert wait_until_dead(pid, timeout=15), f"a task outlived its daemon ({stop})"
    own_platform.start()
    answer = wait_for(own_platform, execution, "succeeded")
    ran = attempts(own_platform, "survivor")
    # Task 0 is not run again; task 1's interrupted attempt is not held against its retries.
    assert sorted(ran) == [(0, 0), (1, 0), (1, 1), (2, 0)]
    assert answer["message"] == "3 tasks completed successfully"
    assert answer["retries"] == 0
    logs = own_platform.run("jobs", "logs", "read", "survivor", "--execution", execution)
    assert "resumes after a daemon restart; task(s) 1 were interrupted" in logs.stdout


def test_the_dashboard_lists_jobs_and_their_executions(
    platform: Platform,
    tmp_path: Path,
    watched: Watched,  # noqa: F811 - test_dashboard's fixture, imported above
) -> None:
    create(platform, "on-the-page", "--tasks", "2")  # fmt: skip
    result = platform.run("jobs", "execute", "on-the-page", "--wait", timeout=EXECUTION_SECONDS)
    assert result.returncode == 0, describe(result)
    execution = execution_of(result.stdout)
    page = watched.page
    page.goto(dashboard_url(platform) + "/")
    row = page.get_by_test_id("job-on-the-page")
    row.wait_for()
    text = row.inner_text()
    assert execution in text and "succeeded" in text and "2/2 succeeded" in text
    assert watched.errors == []


def test_a_procfile_migrate_line_runs_as_a_job_from_the_same_source(
    platform: Platform, tmp_path: Path
) -> None:
    """Google's Django sample: a Procfile with `web:` and `migrate:` lines, the migrations run
    by `gcloud run jobs create migrate --command migrate` from the service's own source."""
    folder = tmp_path / "mysite"
    folder.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(folder)],
        check=True,
        timeout=60,
    )
    settings = folder / "mysite" / "settings.py"
    # The database is outside the source (Cloud SQL on Cloud Run; a file named by env here).
    settings.write_text(
        settings.read_text()
        .replace("BASE_DIR / 'db.sqlite3'", "__import__('os').environ['DATABASE_PATH']")
        .replace('BASE_DIR / "db.sqlite3"', "__import__('os').environ['DATABASE_PATH']")
    )
    (folder / "requirements.txt").write_text("django\ngunicorn\n")
    (folder / "Procfile").write_text(
        "web: gunicorn --bind 127.0.0.1:$PORT --workers 1 --threads 8 --timeout 0 "
        "mysite.wsgi:application\n"
        "migrate: python manage.py migrate && python manage.py check\n"
    )
    # In /tmp, which a sandboxed task has to itself (the test's folders are hidden from it):
    # what the migrations did shows in the job's log (`manage.py check` runs after them).
    database = Path("/tmp") / f"homerun-e2e-migrate-{uuid.uuid4().hex}.sqlite3"
    try:
        result = platform.run(
            "jobs", "deploy", "migrate", "--source", str(folder), "--command", "migrate",
            "--set-env-vars", f"DATABASE_PATH={database}", "--execute-now", "--wait",
            timeout=270,
        )  # fmt: skip
    finally:
        database.unlink(missing_ok=True)  # there without a sandbox
    assert result.returncode == 0, describe(result)
    assert "Procfile migrate: (--command migrate)" in result.stdout + result.stderr
    logs = platform.run("jobs", "logs", "read", "migrate", "--limit", "200")
    for app in ("auth", "contenttypes", "sessions", "admin"):
        assert f"Applying {app}.0001_initial... OK" in logs.stdout, describe(logs)
    assert "System check identified no issues" in logs.stdout, describe(logs)


def test_a_jobs_yaml_round_trips_through_replace(platform: Platform, tmp_path: Path) -> None:
    """`jobs describe --format yaml`, edited, then `jobs replace`: Cloud Run's Job document
    changes the job without a rebuild (its image is the job's artifact)."""
    create(platform, "from-yaml", "--tasks", "1")  # fmt: skip
    described = platform.run("jobs", "describe", "from-yaml", "--format", "yaml")
    assert described.returncode == 0, describe(described)
    document = yaml.safe_load(described.stdout)
    assert document["apiVersion"] == "run.googleapis.com/v1" and document["kind"] == "Job"
    execution = document["spec"]["template"]["spec"]
    execution["taskCount"] = 3
    container = execution["template"]["spec"]["containers"][0]
    assert container["image"].startswith("homerun.local/from-yaml@sha256:")
    container.setdefault("env", []).append({"name": "SLEEP_MS", "value": "1"})
    edited = tmp_path / "job.yaml"
    edited.write_text(yaml.safe_dump(document))
    replaced = platform.run("jobs", "replace", str(edited), timeout=120)
    assert replaced.returncode == 0, describe(replaced)
    assert "Job [from-yaml] has successfully been replaced." in replaced.stdout
    assert "Building" not in replaced.stdout + replaced.stderr  # the same code: no build
    result = platform.run("jobs", "execute", "from-yaml", "--wait", timeout=EXECUTION_SECONDS)
    assert result.returncode == 0, describe(result)
    ran = attempts(platform, "from-yaml")
    assert sorted(ran) == [(0, 0), (1, 0), (2, 0)]
    assert ran[(2, 0)]["env"]["CLOUD_RUN_TASK_COUNT"] == "3"
    again = yaml.safe_load(platform.run("jobs", "describe", "from-yaml", "--format", "yaml").stdout)
    assert again["spec"]["template"]["spec"]["taskCount"] == 3
    assert again["status"]["latestCreatedExecution"]["completionStatus"] == "EXECUTION_SUCCEEDED"


def test_a_job_on_a_one_minute_schedule_runs_by_itself(platform: Platform, tmp_path: Path) -> None:
    """Cloud Scheduler's shortest interval: `* * * * *` runs within the next minute."""
    create(platform, "ticker", "--schedule", "* * * * *")  # fmt: skip
    described = platform.run("jobs", "describe", "ticker")
    assert "Schedule:      * * * * * (UTC), next run at " in described.stdout, describe(described)
    deadline = time.monotonic() + 75
    listed: list[dict[str, Any]] = []
    while not listed and time.monotonic() < deadline:
        result = platform.run("jobs", "executions", "list", "--job", "ticker", "--format", "json")
        assert result.returncode == 0, describe(result)
        listed = json.loads(result.stdout)
        time.sleep(0.5)
    assert listed, "no scheduled execution within 75 s"
    answer = wait_for(platform, listed[0]["name"], "succeeded")
    assert answer["succeeded"] == 1 and (0, 0) in attempts(platform, "ticker")
    cleared = platform.run("jobs", "update", "ticker", "--clear-schedule")
    assert cleared.returncode == 0, describe(cleared)
    assert "Schedule:" not in platform.run("jobs", "describe", "ticker").stdout
    assert platform.run("jobs", "delete", "ticker", "-q").returncode == 0


def test_a_job_from_an_image_builds_submit_made_runs_its_tasks_as_processes(
    platform: Platform, tmp_path: Path
) -> None:
    """The image is homerun's own artifact (the Python subset, no engine): the tasks run as
    processes, as a service deployed from it does."""
    built = platform.run(
        "builds", "submit", str(APP), "--tag", "localhost/job-tasks:v1", timeout=270
    )
    assert built.returncode == 0, describe(built)
    created = platform.run(
        "jobs", "create", "from-image", "--image", "localhost/job-tasks:v1", "--tasks", "2",
        "--max-retries", "1", "--set-env-vars", "FAIL_MODE=odd-first",
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    assert "Image localhost/job-tasks:v1 is localhost/job-tasks@sha256:" in (
        created.stdout + created.stderr
    )
    result = platform.run("jobs", "execute", "from-image", "--wait", timeout=EXECUTION_SECONDS)
    assert result.returncode == 0, describe(result)
    ran = attempts(platform, "from-image")
    assert sorted(ran) == [(0, 0), (1, 0), (1, 1)]
    assert Path(ran[(0, 0)]["python"]).exists()  # a process of this machine's interpreter
    assert ran[(0, 0)]["env"]["CLOUD_RUN_JOB"] == "from-image"
    again = platform.run("jobs", "deploy", "from-image", "--image", "localhost/job-tasks:v1")
    assert again.returncode == 0 and "Job [from-image] is unchanged." in again.stdout
    assert platform.run("jobs", "delete", "from-image", "-q").returncode == 0


def test_an_image_that_is_not_there_or_not_a_name_is_refused(platform: Platform) -> None:
    unknown = platform.run("jobs", "create", "no-image", "--image", "localhost/no-such-job:v1")
    assert unknown.returncode == 1
    assert "--image: there is no image localhost/no-such-job:v1 in homerun's image store" in (
        unknown.stderr
    ), describe(unknown)
    assert "homerun builds submit SOURCE --tag localhost/no-such-job:v1" in unknown.stderr
    malformed = platform.run("jobs", "create", "no-image", "--image", "localhost/No_Such")
    assert malformed.returncode == 1
    assert "--image: 'localhost/No_Such' is not an image name" in malformed.stderr
    both = platform.run("jobs", "create", "no-image", "--image", "localhost/x", "--source", ".")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert "no-image" not in platform.run("jobs", "list").stdout
