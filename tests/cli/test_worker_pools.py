"""`homerun worker-pools ...` over the fake client: what each command sends and prints."""

from __future__ import annotations

from pathlib import Path

from .conftest import FakeClient, Run


def test_deploy_sends_the_source_count_and_env(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("worker-pools", "deploy", "consumer", "--source", str(app), "--instances", "3",
                 "--set-env-vars", "QUEUE=jobs")  # fmt: skip
    assert result.code == 0, result.err
    [(pool, changes, instances)] = fake.called("deploy_worker_pool")
    assert (pool, instances) == ("consumer", 3)
    assert changes.source == str(app) and changes.env.replace == {"QUEUE": "jobs"}
    assert "Worker pool [consumer] has been updated: revision [consumer-00002] runs 3" in (
        result.out
    )


def test_an_existing_pool_keeps_its_code_without_source(run: Run, fake: FakeClient) -> None:
    result = run("worker-pools", "deploy", "consumer", "--instances", "5")
    assert result.code == 0, result.err
    [(_, changes, instances)] = fake.called("deploy_worker_pool")
    assert changes.source is None and instances == 5


def test_bad_flags_are_refused_before_the_daemon_is_asked(run: Run, fake: FakeClient) -> None:
    too_many = run("worker-pools", "deploy", "consumer", "--instances", "101")
    assert too_many.code == 1 and "--instances: must be between 0 and 100" in too_many.err
    bad_name = run("worker-pools", "deploy", "Consumer_1", "--instances", "1")
    assert bad_name.code == 1 and "invalid worker pool name 'Consumer_1'" in bad_name.err
    assert not fake.called("deploy_worker_pool")


def test_describe_list_logs_and_delete(run: Run, fake: FakeClient) -> None:
    described = run("worker-pools", "describe", "consumer")
    assert described.code == 0, described.err
    assert "Instances:     1 running of 2" in described.out
    assert "Instance 0:    running (pid 4242)" in described.out
    assert "Instance 1:    waiting to start again at " in described.out
    assert "2 restart(s), last ended: exit code 1" in described.out
    listed = run("worker-pools", "list")
    assert listed.out.splitlines()[1].split()[:3] == ["consumer", "consumer-00001", "1/2"]
    logs = run("worker-pools", "logs", "read", "consumer", "--limit", "5")
    assert "consumer-00001-0-0: took job 7" in logs.out
    assert fake.called("worker_pool_logs") == [("consumer", 5)]
    assert (
        run("worker-pools", "delete", "consumer", "-q").out == "Deleted worker pool [consumer].\n"
    )
    missing = run("worker-pools", "describe", "nope")
    assert missing.code == 1 and "worker pool 'nope' not found" in missing.err
