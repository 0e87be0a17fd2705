"""`homerun scheduler jobs ...` over the fake client: what each command sends and prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import FakeClient, Run


def test_create_http_sends_gcloud_s_flags_as_a_target(run: Run, fake: FakeClient) -> None:
    result = run(
        "scheduler", "jobs", "create", "http", "nightly", "--schedule", "0 3 * * *",
        "--uri", "http://report.localhost:8080/run", "--http-method", "put",
        "--message-body", "{}", "--headers", "X-Job=nightly,Content-Type=application/json",
        "--time-zone", "Europe/Paris", "--location", "europe-west1",
        "--oidc-service-account-email", "sched@my-project.iam.gserviceaccount.com",
    )  # fmt: skip
    assert result.code == 0, result.err
    [(request,)] = fake.called("create_scheduler_job")
    assert (request.name, request.schedule, request.time_zone) == (
        "nightly",
        "0 3 * * *",
        "Europe/Paris",
    )
    target = request.target
    assert (target.http_method, target.body) == ("put", "{}")
    assert target.headers == {"X-Job": "nightly", "Content-Type": "application/json"}
    assert target.audience == "http://report.localhost:8080"  # the URL without its path
    assert "Created scheduler job [nightly]." in result.out


def test_a_body_from_a_file(run: Run, fake: FakeClient, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"day": "monday"}')
    result = run(
        "scheduler", "jobs", "create", "http", "nightly", "--schedule", "@daily",
        "--uri", "http://127.0.0.1:9000/", "--message-body-from-file", str(body),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert fake.called("create_scheduler_job")[0][0].target.body == '{"day": "monday"}'


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--schedule", "0 25 * * *"], "--schedule: hour '25' is not between 0 and 23"),
        (["--schedule", "@daily", "--time-zone", "Paris"], "--time-zone"),
        (["--schedule", "@daily", "--headers", "X-Job"], "--headers: 'X-Job' is not KEY=VALUE"),
    ],
)
def test_bad_flags_are_refused_before_the_daemon_is_asked(
    run: Run, fake: FakeClient, flags: list[str], message: str
) -> None:
    result = run(
        "scheduler", "jobs", "create", "http", "nightly", "--uri", "http://127.0.0.1/", *flags
    )  # fmt: skip
    assert result.code == 1
    assert message in result.err
    assert fake.called("create_scheduler_job") == []


def test_list_describe_pause_resume_run_and_delete(run: Run, fake: FakeClient) -> None:
    listed = run("scheduler", "jobs", "list")
    assert listed.code == 0 and "nightly" in listed.out and "ENABLED" in listed.out
    described = run("scheduler", "jobs", "describe", "nightly")
    assert "Target:        POST http://report.localhost:8080/run" in described.out
    assert "Calls:         none yet" in described.out
    assert run("scheduler", "jobs", "describe", "weekly").code == 1
    paused = run("scheduler", "jobs", "pause", "nightly")
    assert paused.code == 0 and "Job has been paused: [nightly]." in paused.out
    resumed = run("scheduler", "jobs", "resume", "nightly")
    assert resumed.code == 0 and "Next run: " in resumed.out
    failed = run("scheduler", "jobs", "run", "nightly")
    assert failed.code == 1 and "Ran [nightly]: FAILED: HTTP 403: no" in failed.out
    deleted = run("scheduler", "jobs", "delete", "nightly", "-q")
    assert deleted.code == 0 and fake.called("delete_scheduler_job") == [("nightly",)]
