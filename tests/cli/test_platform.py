"""`homerun up`, `down` and `status` over a fake client."""

from __future__ import annotations

from .conftest import FakeClient, Run


def test_status_says_where_and_what(run: Run, home) -> None:
    result = run("status")
    assert result.code == 0
    assert result.out.splitlines() == [
        f"homerun is running (pid 4242), HOMERUN_HOME={home}",
        "  router:    http://127.0.0.1:8080",
        "  dashboard: http://127.0.0.1:8081",
        "  services:  1, revisions: 1, instances: 1",
        "  hello                    http://hello.localhost:8080",
    ]


def test_status_without_a_daemon(run: Run, fake: FakeClient, home) -> None:
    fake.running = False
    result = run("status")
    assert result.code == 1
    assert result.out == f"homerun is not running (HOMERUN_HOME={home})\n"


def test_down_stops_and_waits_until_the_daemon_is_gone(run: Run, fake: FakeClient) -> None:
    result = run("down")
    assert result.code == 0 and result.out == "homerun stopped\n"
    assert [name for name, _ in fake.calls] == ["shutdown", "status"]


def test_down_without_a_daemon(run: Run, fake: FakeClient) -> None:
    fake.running = False
    result = run("down")
    assert result.code == 0 and result.out.startswith("homerun is not running")


def test_up_refuses_a_second_daemon(run: Run) -> None:
    result = run("up")
    assert result.code == 1
    assert "homerun already runs" in result.err
