"""Bad input is refused by the CLI itself: clear message, non-zero exit, no daemon started."""

import io
from pathlib import Path

import pytest

from homerun.cli import main
from homerun.cli._context import Context
from homerun.cli.deploy import ask_allow_unauthenticated


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOMERUN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "main.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    return folder


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["deploy", "Bad_Name", "--source", "{app}"], "invalid service name 'Bad_Name'"),
        (["deploy", "ok", "--source", "{missing}"], "does not exist"),
        (["deploy", "ok", "--source", "{empty}"], "is empty"),
        (["deploy", "ok", "--source", "{app}/main.py"], "is not a folder"),
        (["deploy", "ok", "--source", "{app}", "--set-env-vars", "NOEQUALS"], "not KEY=VALUE"),
        (["deploy", "ok", "--source", "{app}", "--set-env-vars", "PORT=1"], "PORT is reserved"),
        (["deploy", "ok", "--source", "{app}", "--concurrency", "0"], "between 1 and 1000"),
        (["deploy", "ok", "--source", "{app}", "--concurrency", "lots"], "--concurrency"),
        (["deploy", "ok", "--source", "{app}", "--timeout", "3601"], "between 1 and 3600"),
        (
            ["deploy", "ok", "--source", "{app}", "--timeout", "soon"],
            "--timeout: expected a duration",
        ),
    ],
)
def test_deploy_refuses_bad_input_without_starting_a_daemon(
    arguments: list[str],
    message: str,
    home: Path,
    app: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    places = {"app": app, "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    assert main([argument.format(**places) for argument in arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ERROR: ") and message in error
    assert not (home / "admin.sock").exists() and not (home / "daemon.log").exists()


def test_deploy_takes_a_source_or_an_image_not_both(
    home: Path, app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "ok", "--source", str(app), "--image", "gcr.io/p/x"]) == 2
    error = capsys.readouterr().err
    assert "ERROR: homerun deploy: argument --image: not allowed with argument --source" in error
    assert not (home / "admin.sock").exists() and not (home / "daemon.log").exists()


def test_unknown_flag_names_the_flag(
    home: Path, app: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "ok", "--source", str(app), "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_status_without_daemon_exits_non_zero(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 1
    assert "homerun is not running" in capsys.readouterr().out


def test_commands_without_daemon_say_so(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["services", "list"]) == 1
    assert "no homerun daemon answers" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["deploy", "ok", "--source", "{app}", "--set-env-vars", "A=1"]
            + ["--update-env-vars", "B=2"],
            "--set-env-vars and --update-env-vars cannot be used together",
        ),
        (
            ["deploy", "ok", "--source", "{app}", "--clear-env-vars", "--env-vars-file", "{env}"],
            "cannot be used together",
        ),
        (["deploy", "ok", "--source", "{app}", "--env-vars-file", "{missing}"], "cannot read"),
        (["deploy", "ok", "--source", "{app}", "--env-vars-file", "{badenv}"], "must be a string"),
        (["deploy", "ok", "--source", "{app}", "--set-secrets", "DB=db"], "is not NAME:VERSION"),
        (
            ["deploy", "ok", "--source", "{app}", "--set-secrets", "DB=db:1", "--clear-secrets"],
            "cannot be used together",
        ),
        (["deploy", "ok", "--source", "{app}", "--tag", "Blue"], "--tag: invalid tag 'Blue'"),
        (["deploy", "ok", "--source", "{app}", "--cpu", "lots"], "--cpu: 'lots' is not a CPU"),
        (["deploy", "ok", "--source", "{app}", "--min-instances", "x"], "--min-instances"),
        (["services", "update", "ok", "--remove-env-vars", "1A"], "invalid variable name"),
        (["services", "update-traffic", "ok", "--to-revisions", "a=200"], "whole 0..100"),
        (["services", "update-traffic", "ok", "--to-revisions", "a"], "is not NAME=VALUE"),
        (
            ["services", "update-traffic", "ok", "--set-tags", "a=x", "--remove-tags", "b"],
            "--set-tags and --remove-tags cannot be used together",
        ),
        (["services", "update-traffic", "ok", "--update-tags", "A=x"], "invalid tag 'A'"),
        (["services", "replace", "{missing}"], "cannot read"),
        (["services", "replace", "{badyaml}"], "spec.traffic[0].percent: must be 0..100"),
        (["secrets", "create", "db", "--data-file", "{missing}"], "--data-file: cannot read"),
        (["secrets", "create", "bad/name", "--data-file", "{env}"], "invalid secret name"),
        (["deploy", "ok", "--source", "{app}", "--ingress", "everyone"], "--ingress: 'everyone'"),
        (["services", "update", "ok", "--ingress", "private"], "--ingress: 'private'"),
        (
            [
                "services",
                "add-iam-policy-binding",
                "ok",
                "--member",
                "bob",
                "--role",
                "roles/run.invoker",
            ],
            "--member: 'bob' is not a member; write user:NAME",
        ),
        (
            [
                "services",
                "remove-iam-policy-binding",
                "ok",
                "--member",
                "allUsers",
                "--role",
                "roles/owner",
            ],
            "--role: 'roles/owner' is not supported",
        ),
        (["auth", "print-identity-token", "--account", "a b"], "the name after 'user:'"),
        (
            ["auth", "print-identity-token", "--impersonate-service-account", "x/y"],
            "--impersonate-service-account",
        ),
    ],
)
def test_new_flags_refuse_bad_input_without_starting_a_daemon(
    arguments: list[str],
    message: str,
    home: Path,
    app: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "env.yaml").write_text("A: '1'\n")
    (tmp_path / "badenv.yaml").write_text("A: 1\n")
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: ok}\n"
        "spec:\n  template:\n    spec:\n      containers: [{image: "
        f"'homerun.local/ok@sha256:{'a' * 64}'}}]\n"
        "  traffic: [{latestRevision: true, percent: 101}]\n"
    )
    places = {
        "app": app,
        "missing": tmp_path / "missing",
        "env": tmp_path / "env.yaml",
        "badenv": tmp_path / "badenv.yaml",
        "badyaml": tmp_path / "bad.yaml",
    }
    assert main([argument.format(**places) for argument in arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith("ERROR: ") and message in error, error
    assert not (home / "admin.sock").exists() and not (home / "daemon.log").exists()


def test_traffic_moves_are_one_of_a_kind(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["services", "update-traffic", "ok", "--to-latest", "--to-revisions", "a=100"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("answer", "allowed"),
    [("y\n", True), ("YES\n", True), ("\n", False), ("n\n", False), ("", False)],
)
def test_the_question_for_a_new_service_defaults_to_private(
    answer: str, allowed: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert ask_allow_unauthenticated(Context(), "hello") is allowed
    assert "Allow unauthenticated invocations to [hello] (y/N)? " in capsys.readouterr().out


def test_remote_use_needs_the_admin_token(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOMERUN_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("HOMERUN_TOKEN", raising=False)
    assert main(["services", "list"]) == 1
    assert "HOMERUN_TOKEN is not" in capsys.readouterr().err
    monkeypatch.setenv("HOMERUN_TOKEN", "t")
    assert main(["deploy", "ok", "--source", "relative/app"]) == 1
    assert "absolute path of the app's folder on the daemon's machine" in capsys.readouterr().err
