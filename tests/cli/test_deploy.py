"""`homerun deploy` over a fake client: the request it sends, what it prints, the question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homerun.model.events import BuildLine, Failed, Phase
from homerun.model.probes import Probe, ProbeAction

from .conftest import FakeClient, Run, done


def test_a_new_service_is_private_and_says_how_to_open_it(
    run: Run, fake: FakeClient, app: Path
) -> None:
    fake.events = [Phase(message="Starting revision new-00001-abc"), done("new", "new-00001-abc")]
    result = run("deploy", "new", "--source", str(app))
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    assert request.service == "new" and request.changes.source == str(app)
    assert request.allow_unauthenticated is None  # the daemon's default: private
    assert result.out.splitlines() == [
        "Starting revision new-00001-abc",
        "Service [new] revision [new-00001-abc] has been deployed and is serving 100 percent "
        "of traffic.",
        "Service [new] is private: callers need an ID token "
        "(`homerun auth print-identity-token`). Make it public with "
        "`homerun services update new --allow-unauthenticated`.",
        "Service URL: http://new.localhost:8080",
    ]


def test_a_new_public_service_says_how_to_close_it(run: Run, fake: FakeClient, app: Path) -> None:
    fake.events = [done("new", "new-00001-abc")]
    result = run("deploy", "new", "--source", str(app), "--allow-unauthenticated")
    assert "Service [new] is public" in result.out
    assert "homerun services update new --no-allow-unauthenticated" in result.out
    assert result.out.splitlines()[-1] == "Service URL: http://new.localhost:8080"


def test_a_redeploy_says_nothing_about_access(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("deploy", "hello", "--source", str(app))
    assert result.code == 0
    assert "private" not in result.out and "public" not in result.out


def test_the_question_on_a_terminal(run: Run, fake: FakeClient, app: Path) -> None:
    fake.events = [done("new", "new-00001-abc")]
    result = run("deploy", "new", "--source", str(app), typed="y\n")
    assert "Allow unauthenticated invocations to [new] (y/N)? " in result.out
    assert fake.called("deploy")[0][0].allow_unauthenticated is True
    assert "Service [new] is public" in result.out


def test_quiet_asks_nothing(run: Run, fake: FakeClient, app: Path) -> None:
    fake.events = [done("new", "new-00001-abc")]
    result = run("deploy", "new", "--source", str(app), "-q", typed="y\n")
    assert "Allow" not in result.out
    assert fake.called("deploy")[0][0].allow_unauthenticated is None


def test_no_question_for_an_existing_service(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("deploy", "hello", "--source", str(app), typed="y\n")
    assert "Allow" not in result.out


def test_the_entrypoint_is_said_once(run: Run, fake: FakeClient, app: Path) -> None:
    fake.events = [
        Phase(message="Building revision hello-00003-xyz from /srv/hello"),
        BuildLine(line="entrypoint: gunicorn main:app (Procfile web:)"),
        BuildLine(line="artifact ready: /tmp/x"),
        Phase(message="Entrypoint (Procfile web:): gunicorn main:app"),
        Phase(message="Starting revision hello-00003-xyz"),
        done(),
    ]
    out = run("deploy", "hello", "--source", str(app)).out
    assert out.count("gunicorn main:app") == 1
    assert "Entrypoint (Procfile web:): gunicorn main:app" in out
    assert "  artifact ready: /tmp/x" in out


def test_flags_become_the_request(run: Run, fake: FakeClient, app: Path) -> None:
    result = run(
        "deploy",
        "hello",
        "--source",
        str(app),
        "--set-env-vars",
        "A=1,B=2",
        "--update-secrets",
        "DB=db-url:latest",
        "--concurrency",
        "10",
        "--timeout",
        "5m",
        "--min-instances",
        "1",
        "--max-instances",
        "default",
        "--tag",
        "blue",
        "--no-traffic",
        "--ingress",
        "internal",
        "--command",
        "gunicorn -b :$PORT main:app",
    )
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    changes = request.changes
    assert changes.env.replace == {"A": "1", "B": "2"}
    assert str(changes.secrets.update["DB"]) == "db-url:latest"
    assert changes.container_concurrency == 10 and changes.timeout_seconds == 300
    assert changes.annotations == {
        "autoscaling.knative.dev/min-scale": "1",
        "autoscaling.knative.dev/max-scale": None,
        "run.homerun.dev/concurrency": None,  # a number turns `--concurrency auto` off
    }
    assert changes.command == ["/bin/sh", "-c", "gunicorn -b :$PORT main:app"]
    assert (request.tag, request.no_traffic, request.ingress) == ("blue", True, "internal")
    assert "The revision can be reached directly" not in result.out


def test_a_failed_deploy_says_why_once_and_exits_1(run: Run, fake: FakeClient, app: Path) -> None:
    fake.events = [
        Phase(message="Building revision hello-00003-xyz from /srv/hello"),
        BuildLine(line="ERROR: No matching distribution found for nope"),
        Failed(
            message="pip install -r requirements.txt failed (exit 1); its last lines:\n"
            "  ERROR: No matching distribution found for nope\nFix the requirement."
        ),
    ]
    result = run("deploy", "hello", "--source", str(app))
    assert result.code == 1
    # stdout and stderr go to different places here: stderr keeps the whole story.
    assert result.err.startswith("ERROR: pip install -r requirements.txt failed")
    assert "No matching distribution found for nope" in result.err
    assert "Service URL" not in result.out


def test_bad_input_never_reaches_the_client(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("deploy", "hello", "--source", str(app), "--concurrency", "0")
    assert result.code == 1 and "between 1 and 1000" in result.err
    assert fake.calls == []


def test_service_account_flag(run: Run, fake: FakeClient, app: Path) -> None:
    account = "runner@homerun-local.iam.gserviceaccount.com"
    fake.events = [done("new", "new-00001-abc")]
    result = run("deploy", "new", "--source", str(app), "--service-account", account)
    assert result.code == 0, result.err
    assert fake.called("deploy")[0][0].changes.service_account == account
    refused = run("deploy", "new", "--source", str(app), "--service-account", "alice@example.com")
    assert refused.code != 0 and "--service-account" in refused.err


def test_a_readmes_gcloud_deploy_line_runs_as_written(
    run: Run, fake: FakeClient, app: Path
) -> None:
    fake.events = [done("hello", "hello-v2")]
    result = run(
        "deploy", "hello", "--source", str(app), "--region", "us-central1", "--project", "p",
        "--platform", "managed", "--allow-unauthenticated", "--quiet", "--async",
        "--labels", "team=web,env=prod", "--description", "the front", "--revision-suffix", "v2",
    )  # fmt: skip
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    assert request.update_labels == {"team": "web", "env": "prod"}
    assert (request.description, request.revision_suffix) == ("the front", "v2")
    updated = run("services", "update", "hello", "--update-labels", "tier=1", "-q")
    assert updated.code == 0, updated.err
    assert fake.called("deploy")[1][0].update_labels == {"tier": "1"}


def test_labels_follow_googles_rules(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("deploy", "hello", "--source", str(app), "--labels", "Team=web")
    assert result.code == 1 and "--labels: 'Team' is not a label key" in result.err
    assert fake.called("deploy") == []


def test_probe_flags_take_gclouds_key_value_lists(run: Run, fake: FakeClient, app: Path) -> None:
    result = run(
        "deploy",
        "hello",
        "--source",
        str(app),
        "--readiness-probe",
        "httpGet.path=/ready,periodSeconds=1,failureThreshold=1",
        "--liveness-probe",
        "httpGet.path=/healthz,httpGet.port=8080,periodSeconds=5",
        "--startup-probe",
        "tcpSocket.port=8080,periodSeconds=2,failureThreshold=30",
    )
    assert result.code == 0, result.err
    changes = fake.called("deploy")[0][0].changes
    assert changes.readiness_probe == Probe(
        action=ProbeAction.HTTP, path="/ready", period_seconds=1, failure_threshold=1
    )
    assert changes.liveness_probe == Probe(
        action=ProbeAction.HTTP, path="/healthz", period_seconds=5
    )
    assert changes.startup_probe == Probe(period_seconds=2, failure_threshold=30)


def test_a_bad_probe_flag_says_which_key_and_why(run: Run, fake: FakeClient, app: Path) -> None:
    for flag, value, message in (
        ("--liveness-probe", "grpc.port=9000", "must be the container port (8080): a probe"),
        ("--readiness-probe", "periodSeconds=-1", "--readiness-probe: periodSeconds: must be"),
        ("--startup-probe", "httpGet.pth=/", "--startup-probe: httpGet.pth: unknown field; did"),
        ("--liveness-probe", "tcpSocket.port=9", "must be the container port (8080)"),
    ):
        result = run("deploy", "hello", "--source", str(app), flag, value)
        assert result.code == 1 and message in result.err, result.err
    assert fake.called("deploy") == []


def test_function_and_base_image_are_sent_as_cloud_runs_annotations(
    run: Run, fake: FakeClient, app: Path
) -> None:
    fake.events = [done("fn", "fn-00001-abc")]
    result = run("deploy", "fn", "--source", str(app), "--function", "hello_http",
                 "--base-image", "python312")  # fmt: skip
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    assert request.changes.annotations == {
        "run.googleapis.com/build-function-target": "hello_http",
        "run.googleapis.com/build-base-image": "python312",
    }


def test_a_function_target_that_is_not_a_name_is_refused(
    run: Run, fake: FakeClient, app: Path
) -> None:
    result = run("deploy", "fn", "--source", str(app), "--function", "main.hello")
    assert result.code == 1
    assert "--function: 'main.hello' is not a function name" in result.err
    assert not fake.called("deploy")


def test_concurrency_auto_is_an_annotation_and_keeps_the_number(
    run: Run, fake: FakeClient, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("app = None\n")
    run("deploy", "hello", "--source", str(app), "--concurrency", "auto")
    (request,) = fake.called("deploy")[0]
    assert request.changes.container_concurrency is None  # the maximum stays as it was
    assert request.changes.annotations == {"run.homerun.dev/concurrency": "auto"}
    refused = run("deploy", "hello", "--source", str(app), "--concurrency", "fast")
    assert refused.code != 0 and "'default' or 'auto'" in refused.err
    # `default`: the API's 0, the default for the revision's CPU (1 below one CPU, else 80).
    run("deploy", "hello", "--source", str(app), "--concurrency", "default", "--cpu", "0.5")
    (default,) = fake.called("deploy")[-1]
    assert default.changes.container_concurrency == 0
    assert default.changes.apply(None).container_concurrency == 1


def test_deploy_image_sends_the_name_and_no_source(run: Run, fake: FakeClient) -> None:
    result = run("deploy", "hello", "--image=gcr.io/my-project/hello")
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    assert request.changes.image == "gcr.io/my-project/hello"
    assert request.changes.source is None


def test_deploy_format_prints_the_service_alone_on_stdout(
    run: Run, fake: FakeClient, app: Path
) -> None:
    # google-github-actions/deploy-cloudrun runs `gcloud run deploy ... --format json` and
    # parses stdout as the Service (status.url).
    result = run("run", "deploy", "hello", "--source", str(app), "--quiet", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["status"]["url"] == "http://hello.localhost:8080"
    assert result.err.splitlines() == [
        "Starting revision hello-00003-xyz",
        "Service [hello] revision [hello-00003-xyz] has been deployed and is serving 100 "
        "percent of traffic.",
        "Service URL: http://hello.localhost:8080",
    ]
    described = run("deploy", "hello", "--image", "localhost/hello", "--format", "yaml").out
    assert described == run("services", "describe", "hello", "--format", "yaml").out
    bad = run("deploy", "hello", "--source", str(app), "--format", "text")
    assert bad.code == 1 and "--format: 'text' is not a format homerun prints" in bad.err
    assert len(fake.called("deploy")) == 2


def test_run_deploy_is_gcloud_spelling_of_deploy(run: Run, fake: FakeClient) -> None:
    result = run("run", "deploy", "hello", "--image", "gcr.io/my-project/hello")
    assert result.code == 0, result.err
    assert fake.called("deploy")[0][0].changes.image == "gcr.io/my-project/hello"


def test_a_bad_image_name_is_refused_before_the_daemon_is_asked(run: Run, fake: FakeClient) -> None:
    result = run("deploy", "hello", "--image", "gcr.io/My-Project/hello")
    assert result.code == 1
    assert "--image: 'gcr.io/My-Project/hello' is not an image name" in result.err
    assert not fake.called("deploy")


def test_source_and_image_are_one_or_the_other(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("deploy", "hello", "--source", str(app), "--image", "localhost/hello")
    assert result.code == 2
    assert "not allowed with" in result.err


def test_secret_files_and_volumes_become_the_request(run: Run, fake: FakeClient, app: Path) -> None:
    result = run(
        "deploy",
        "hello",
        "--source",
        str(app),
        "--update-secrets",
        "/secrets/api-key=api-key:latest,DB=db-url:2",
        "--add-volume",
        "name=cache,type=in-memory,size-limit=64Mi",
        "--add-volume",
        "name=scratch,type=in-memory",
        "--add-volume-mount",
        "volume=cache,mount-path=/cache/",
        "--add-volume-mount",
        "volume=scratch,mount-path=/scratch",
    )
    assert result.code == 0, result.err
    changes = fake.called("deploy")[0][0].changes
    assert {key: str(ref) for key, ref in changes.secrets.update.items()} == {
        "/secrets/api-key": "api-key:latest",
        "DB": "db-url:2",
    }
    assert {name: volume.size_limit for name, volume in changes.volumes.update.items()} == {
        "cache": "64Mi",
        "scratch": None,
    }
    assert changes.volume_mounts.update == {"/cache": "cache", "/scratch": "scratch"}


def test_removing_secret_files_volumes_and_mounts(run: Run, fake: FakeClient) -> None:
    result = run(
        "services",
        "update",
        "hello",
        "--remove-secrets",
        "/secrets/api-key/,DB",
        "--remove-volume",
        "cache",
        "--remove-volume-mount",
        "/scratch",
    )
    assert result.code == 0, result.err
    changes = fake.called("deploy")[0][0].changes
    assert changes.secrets.remove == ["/secrets/api-key", "DB"]
    assert changes.volumes.remove == ["cache"]
    assert changes.volume_mounts.remove == ["/scratch"]
    cleared = run("services", "update", "hello", "--clear-volumes", "--clear-volume-mounts")
    assert cleared.code == 0, cleared.err
    last = fake.called("deploy")[-1][0].changes
    assert last.volumes.clear and last.volume_mounts.clear


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set-secrets", "/api-key=k:1"], "put it in a folder of its own, e.g. /secrets/api-key"),
        (["--set-secrets", "secrets/key=k:1"], "invalid variable name"),
        (["--set-secrets", "/proc/key=k:1"], "Cloud Run does not mount volumes at /dev"),
        (["--set-secrets", "/secrets/../etc/key=k:1"], "'..' are not allowed"),
        (["--set-secrets", "/secrets/key=k"], "is not NAME:VERSION"),
        (["--add-volume", "name=c,type=cloud-storage"], "homerun has in-memory volumes"),
        (["--add-volume", "type=in-memory"], "give the volume a name"),
        (["--add-volume", "name=c,type=in-memory,size-limit=lots"], "not a memory amount"),
        (["--add-volume", "name=c,type=in-memory,readonly=true"], "unknown key(s) readonly"),
        (["--add-volume", "name=Big_Cache,type=in-memory"], "invalid volume name"),
        (["--add-volume-mount", "volume=c"], "volume=NAME,mount-path=/PATH"),
        (["--add-volume-mount", "volume=c,mount-path=cache"], "not an absolute path"),
        (["--add-volume-mount", "volume=c,mount-path=/"], "cannot be mounted at /"),
        (["--clear-volumes", "--remove-volume", "c"], "cannot be used together"),
        (["--clear-volume-mounts", "--remove-volume-mount", "/c"], "cannot be used together"),
    ],
)
def test_bad_secret_files_and_volumes_are_refused(
    run: Run, fake: FakeClient, flags: list[str], message: str
) -> None:
    result = run("services", "update", "hello", *flags)
    assert result.code != 0
    assert message in result.err
    assert not fake.called("deploy")
