"""`homerun services ...` over a fake client."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from homerun.model.events import Phase
from homerun.model.inspection import RampRequest, RampResult, RampStep
from homerun.model.views import Decision, Readiness, Route, Scaling, StartMode, TrafficSpec

from .conftest import FakeClient, Run, done, revision_summary, service_summary


def test_list(run: Run, fake: FakeClient) -> None:
    result = run("services", "list")
    assert result.out.splitlines() == [
        f"{'SERVICE':<24} {'READY':<6} {'LATEST REVISION':<32} URL",
        f"{'hello':<24} {'yes':<6} {'hello-00002-abc':<32} http://hello.localhost:8080",
    ]
    fake.service_views = []
    assert "No services. Deploy one" in run("services", "list").out


def test_list_as_json_is_the_knative_services_and_summary_json_the_view(
    run: Run, fake: FakeClient
) -> None:
    listed = json.loads(run("services", "list", "--format", "json").out)
    assert [each["metadata"]["name"] for each in listed] == ["hello"]
    assert listed[0]["kind"] == "Service"
    summaries = json.loads(run("services", "list", "--format", "summary-json").out)
    assert summaries == [service_summary().model_dump(mode="json")]


def test_gcloud_command_lines_run_as_written(run: Run, fake: FakeClient) -> None:
    """A README's gcloud line, with `gcloud run` replaced: its global flags are accepted."""
    result = run(
        "services", "describe", "hello", "--project", "my-project", "--region", "us-central1",
        "--platform", "managed", "--format=value(metadata.name)", "-q",
    )  # fmt: skip
    assert result.out == "hello\n", result.err
    listed = run("--project", "p", "services", "list", "--region=europe-west1",
                 "--format", "table(metadata.name)")  # fmt: skip
    assert listed.out == "NAME\nhello\n"
    refused = run("services", "list", "--platform", "gke")
    assert "invalid choice: 'gke'" in refused.err and "managed" in refused.err
    bad = run("services", "describe", "hello", "--format", "xml")
    assert "--format: 'xml' is not a format homerun prints" in bad.err


def test_describe(run: Run, fake: FakeClient) -> None:
    fake.revision_views = [
        revision_summary(
            scaling=Scaling(
                min_instances=0,
                max_instances=100,
                target_per_instance=48,
                stable_window_seconds=60,
                overloaded_requests=2,
                waited_requests=3,
                median_wait_ms=21.5,
                decisions=[Decision(seconds_ago=2, desired=1, mode="stable", reason="1 in flight")],
            ),
            start_mode=StartMode(mode="fork", reason="gunicorn app preloaded"),
        ),
        revision_summary(
            "hello-00001-old",
            status="failed",
            message="boom\nline 2",
            percent=0,
            instances=[],
            tags=[],
        ),
    ]
    out = run("services", "describe", "hello").out
    assert "Service hello\n  URL:      http://hello.localhost:8080\n  Ready:    yes\n" in out
    assert "  Invokers: none bound (private); and user:me, the platform's owner" in out
    assert "    100% hello-00002-abc\n" in out
    assert "env: MODE, DB_URL (secret db-url:latest)" in out
    assert "instances: 0 starting, 1 ready, 0 draining (min 0, max 100, target 48 per" in out
    assert "last decision (2s ago): 1 instance(s), stable: 1 in flight" in out
    assert "3 request(s) waited for an instance (median arrival to first byte 21.5 ms)" in out
    assert "2 request(s) got 429 at max-instances" in out
    assert "entrypoint (Procfile web:): gunicorn main:app" in out
    assert "instances start by fork: gunicorn app preloaded" in out
    assert "instance hello-00002-abc-1  ready  pid 4242  port 9001  in flight 1" in out
    assert "hello-00001-old  failed" in out and "      boom\n      line 2" in out


def test_describe_formats(run: Run, fake: FakeClient) -> None:
    assert "kind: Service" in run("services", "describe", "hello", "--format", "yaml").out
    summary = json.loads(run("services", "describe", "hello", "--format", "summary-json").out)
    assert summary["revisions"][0]["name"] == "hello-00002-abc"
    missing = run("services", "describe", "nope")
    assert missing.code == 1 and "ERROR: service 'nope' not found" in missing.err


def test_a_failed_deploy_is_not_ready_though_the_previous_revision_serves(
    run: Run, fake: FakeClient
) -> None:
    # What the daemon says after hello-00003-xyz failed: hello-00002-abc serves all, and the
    # summary carries the Ready condition of `describe --format yaml`, which is False.
    failed = Readiness(
        status="False",
        reason="RevisionFailed",
        message='Revision "hello-00003-xyz" failed with message: no answer on $PORT',
    )
    fake.service_views = [
        service_summary(latest_created_revision="hello-00003-xyz", ready=False, readiness=failed)
    ]
    out = run("services", "describe", "hello").out
    assert (
        '  Ready:    no (RevisionFailed): Revision "hello-00003-xyz" failed with message: no '
        "answer on $PORT\n"
        "            still serving: 100% hello-00002-abc\n"
        "            hello-00003-xyz failed: its last log lines are under Revisions below; fix "
        "the app and deploy again\n"
    ) in out
    assert run("services", "list").out.splitlines()[1].split()[:3] == [
        "hello",
        "no",
        "hello-00002-abc",
    ]
    deploying = Readiness(status="Unknown", reason="Deploying")
    fake.service_views = [service_summary(ready=False, readiness=deploying)]
    assert (
        "  Ready:    no (Deploying)\n            still serving: 100%"
        in run("services", "describe", "hello").out
    )


def test_list_and_describe_read_readiness_from_the_summary_alone(
    run: Run, fake: FakeClient
) -> None:
    """No Knative document per service: a service deleted between the listing and such a
    request would have failed the whole list."""
    fake.service_views = [service_summary("hello"), service_summary("gone")]
    listed = run("services", "list")
    assert listed.code == 0, listed.err
    assert [line.split()[:2] for line in listed.out.splitlines()[1:]] == [
        ["hello", "yes"],
        ["gone", "yes"],
    ]
    assert "  Ready:    yes\n" in run("services", "describe", "hello").out
    assert fake.called("knative_service") == []


def test_update_takes_image_and_port_as_deploy_does(run: Run, fake: FakeClient) -> None:
    result = run(
        "services", "update", "hello", "--image=gcr.io/my-project/hello:v2", "--port", "9000"
    )
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    assert request.changes.image == "gcr.io/my-project/hello:v2"
    assert request.changes.container_port == 9000 and request.changes.source is None
    run("services", "update", "hello", "--port", "8081")
    (port_only,) = fake.called("deploy")[1]
    assert port_only.changes.image is None and port_only.changes.container_port == 8081
    bad = run("services", "update", "hello", "--image", "gcr.io/My-Project/hello")
    assert bad.code == 1 and "--image: 'gcr.io/My-Project/hello' is not an image name" in bad.err
    zero = run("services", "update", "hello", "--port", "0")
    assert zero.code == 1 and "--port: 0 is not a port; give 1..65535" in zero.err
    assert len(fake.called("deploy")) == 2


def test_update_format_prints_the_service_alone_on_stdout(run: Run, fake: FakeClient) -> None:
    result = run("services", "update", "hello", "--update-env-vars", "A=1", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["metadata"]["name"] == "hello"
    assert "has been deployed" in result.err and "Service URL: " in result.err
    url = run("services", "update", "hello", "--concurrency", "8", "--format", "value(status.url)")
    assert url.out == "http://hello.localhost:8080\n"
    bad = run("services", "update", "hello", "--concurrency", "8", "--format", "xml")
    assert bad.code == 1 and "--format: 'xml' is not a format" in bad.err
    assert len(fake.called("deploy")) == 2  # the bad format was refused before the update


def test_delete_asks_on_a_terminal(run: Run, fake: FakeClient) -> None:
    refused = run("services", "delete", "hello", typed="n\n")
    assert refused.code == 1
    assert "Service [hello] will be deleted" in refused.out
    assert "Do you want to continue (Y/n)? " in refused.out
    assert "Aborted" in refused.err and fake.called("delete") == []
    accepted = run("services", "delete", "hello", typed="\n")
    assert accepted.code == 0 and fake.called("delete") == [("hello",)]
    assert accepted.out.endswith("Deleted service [hello].\n")


def test_delete_without_a_terminal_or_with_quiet_asks_nothing(run: Run, fake: FakeClient) -> None:
    for result in (
        run("services", "delete", "hello"),
        run("services", "delete", "hello", "-q", typed=""),
        run("-q", "services", "delete", "hello", typed=""),
    ):
        assert result.code == 0 and result.out == "Deleted service [hello].\n"
    assert len(fake.called("delete")) == 3


def test_update_access_without_a_new_revision(run: Run, fake: FakeClient) -> None:
    fake.events = [
        Phase(message="No change: hello-00002-abc already runs this template"),
        done(
            revision="hello-00002-abc",
            unchanged=True,
            service_changes=["access set to public (allUsers may invoke)"],
        ),
    ]
    result = run("services", "update", "hello", "--allow-unauthenticated")
    assert result.code == 0
    (request,) = fake.called("deploy")[0]
    assert request.allow_unauthenticated is True and request.changes.source is None
    assert result.out.splitlines()[-2:] == [
        "Service [hello] updated: access set to public (allUsers may invoke).",
        "Service URL: http://hello.localhost:8080",
    ]
    run("services", "update", "hello", "--no-allow-unauthenticated")
    assert fake.called("deploy")[1][0].allow_unauthenticated is False


def test_no_change_is_said_once(run: Run, fake: FakeClient) -> None:
    fake.events = [
        Phase(message="No change: hello-00002-abc already runs this template"),
        done(revision="hello-00002-abc", unchanged=True),
    ]
    out = run("services", "update", "hello", "--update-env-vars", "MODE=beta").out
    assert out.count("No change") == 1
    fake.events = [done(revision="hello-00002-abc", unchanged=True)]  # the daemon said nothing
    out = run("services", "update", "hello", "--update-env-vars", "MODE=beta").out
    assert out.count("No change") == 1 and "no revision was created" in out


def test_update_deploys_a_revision(run: Run, fake: FakeClient) -> None:
    fake.events = [done(percent=0, tag_urls={"beta": "http://beta---hello.localhost:8080"})]
    out = run("services", "update", "hello", "--tag", "beta", "--no-traffic").out
    assert "revision [hello-00003-xyz] has been deployed and is serving 0 percent" in out
    assert "The revision can be reached directly at http://beta---hello.localhost:8080" in out


OLD_URL = "http://old---hello.localhost:8080"
GREEN_URL = "http://green---hello.localhost:8080"


def test_update_traffic(run: Run, fake: FakeClient) -> None:
    fake.service_views = [
        service_summary(
            traffic=[
                Route(revision="hello-00001-old", percent=10),
                Route(revision="hello-00002-abc", percent=90),
                Route(revision="hello-00001-old", percent=0, tag="old", url=OLD_URL),
            ],
            traffic_spec=[
                TrafficSpec(percent=10, revision="hello-00001-old"),
                TrafficSpec(percent=90, latest=True),
                TrafficSpec(percent=0, revision="hello-00001-old", tag="old"),
            ],
        )
    ]
    result = run(
        "services",
        "update-traffic",
        "hello",
        "--to-revisions",
        "hello-00001-old=10,LATEST=90",
        "--update-tags",
        "old=hello-00001-old",
    )
    assert result.code == 0, result.err
    _, update = fake.called("update_traffic")[0]
    assert update.to_revisions == {"hello-00001-old": 10, "LATEST": 90}
    assert update.update_tags == {"old": "hello-00001-old"}
    assert result.out.splitlines() == [
        "Traffic of [hello]:",
        f"   10% hello-00001-old  tag old: {OLD_URL}",
        "   90% hello-00002-abc (LATEST)",
        "Service URL: http://hello.localhost:8080",
    ]


def test_replace(run: Run, fake: FakeClient, tmp_path: Path) -> None:
    manifest = tmp_path / "hello.yaml"
    manifest.write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: {name: hello}\n"
        "spec:\n  template:\n    spec:\n      containers: [{image: "
        f"'homerun.local/hello@sha256:{'a' * 64}'}}]\n"
        "  traffic: [{latestRevision: true, percent: 100}]\n"
    )
    fake.events = [
        Phase(message="The template is unchanged: hello-00002-abc stays"),
        done(revision="hello-00002-abc", unchanged=True),
    ]
    result = run("services", "replace", str(manifest))
    assert result.code == 0, result.err
    assert result.out.count("unchanged") == 1
    assert "Service [hello] replaced: traffic and metadata are applied." in result.out
    service, document, file = fake.called("replace")[0]
    assert service == "hello" and document["metadata"] == {"name": "hello"}


def test_update_traffic_prints_a_revision_once_with_its_tags(run: Run, fake: FakeClient) -> None:
    # deploy --no-traffic --tag canary, then --to-tags canary=10: the tag is a 0% target of its
    # own beside the revision's share (as gcloud keeps it).
    url = "http://canary---hello.localhost:8080"
    fake.service_views = [
        service_summary(
            traffic=[
                Route(revision="hello-00001-old", percent=90),
                Route(revision="hello-00002-abc", percent=10),
                Route(revision="hello-00002-abc", percent=0, tag="canary", url=url),
            ],
            traffic_spec=[
                TrafficSpec(percent=90, revision="hello-00001-old"),
                TrafficSpec(percent=10, revision="hello-00002-abc"),
                TrafficSpec(percent=0, revision="hello-00002-abc", tag="canary"),
            ],
        )
    ]
    result = run("services", "update-traffic", "hello", "--to-tags", "canary=10")
    assert result.out.splitlines() == [
        "Traffic of [hello]:",
        "   90% hello-00001-old",
        f"   10% hello-00002-abc  tag canary: {url}",
        "Service URL: http://hello.localhost:8080",
    ]
    # Then --to-latest: the tagged revision is the one LATEST names, its tag on LATEST's line.
    fake.service_views = [
        service_summary(
            traffic=[
                Route(revision="hello-00002-abc", percent=100),
                Route(revision="hello-00002-abc", percent=0, tag="canary", url=url),
            ],
            traffic_spec=[
                TrafficSpec(percent=100, latest=True),
                TrafficSpec(percent=0, revision="hello-00002-abc", tag="canary"),
            ],
        )
    ]
    result = run("services", "update-traffic", "hello", "--to-latest")
    assert result.out.splitlines()[1:-1] == [f"  100% hello-00002-abc (LATEST)  tag canary: {url}"]


def _green_at_30(fake: FakeClient) -> None:
    """`--update-tags green=hello-00002-abc`, then `--to-tags green=30`, LATEST being that
    revision: 30% pinned to it with the tag, 70% to LATEST, which a deploy moves."""
    fake.service_views = [
        service_summary(
            traffic=[
                Route(revision="hello-00002-abc", percent=30),
                Route(revision="hello-00002-abc", percent=70),
                Route(revision="hello-00002-abc", percent=0, tag="green", url=GREEN_URL),
            ],
            traffic_spec=[
                TrafficSpec(percent=30, revision="hello-00002-abc"),
                TrafficSpec(percent=70, latest=True),
                TrafficSpec(percent=0, revision="hello-00002-abc", tag="green"),
            ],
        )
    ]


def test_update_traffic_keeps_latest_apart_from_the_same_revision_pinned(
    run: Run, fake: FakeClient
) -> None:
    _green_at_30(fake)
    result = run("services", "update-traffic", "hello", "--to-tags", "green=30")
    assert result.out.splitlines() == [
        "Traffic of [hello]:",
        f"   30% hello-00002-abc  tag green: {GREEN_URL}",
        "   70% hello-00002-abc (LATEST)",
        "Service URL: http://hello.localhost:8080",
    ]


def test_update_traffic_format_prints_gcloud_traffic_entries(run: Run, fake: FakeClient) -> None:
    _green_at_30(fake)
    result = run("services", "update-traffic", "hello", "--to-tags", "green=30", "--format", "json")
    assert result.code == 0, result.err
    entries = json.loads(result.out)  # stdout is the JSON alone
    assert [(e["key"], e["specPercent"], e["urls"]) for e in entries] == [
        ("hello-00002-abc", "30", [GREEN_URL]),
        ("LATEST", "70", []),
    ]
    assert entries[1]["displayRevisionId"] == "LATEST (currently hello-00002-abc)"
    assert entries[1]["latestRevision"] is True and entries[1]["revisionName"] == "hello-00002-abc"
    assert entries[0]["tags"] == [
        {"tag": "green", "url": GREEN_URL, "inSpec": True, "inStatus": True}
    ]
    # google-github-actions/deploy-cloudrun: the first tag URL, else the service's.
    assert entries[0]["serviceUrl"] == "http://hello.localhost:8080"
    value = run("services", "update-traffic", "hello", "--to-tags", "green=30",
                "--format", "value(key,specPercent)")  # fmt: skip
    assert value.out == "hello-00002-abc\t30\nLATEST\t70\n"
    bad = run("services", "update-traffic", "hello", "--to-tags", "green=30", "--format", "xml")
    assert bad.code == 1 and "--format: 'xml' is not a format" in bad.err
    assert len(fake.called("update_traffic")) == 2  # the bad format changed nothing


def test_advise_names_the_gap_and_the_concurrency_to_set(run: Run, fake: FakeClient) -> None:
    out = run("services", "advise", "hello").out
    assert "Server capacity:    gunicorn: 1 worker(s) x 8 thread(s) = 8 request(s)" in out
    assert "up to 72 requests wait inside gunicorn" in out
    assert "Recommended --concurrency: 8 (homerun services update hello --concurrency 8)" in out
    assert "Or change the server: gunicorn --workers 1 --threads 80" in out
    assert fake.called("advise") == [("hello", None)]
    as_json = json.loads(run("services", "advise", "hello", "--format", "json").out)
    assert as_json["recommended_concurrency"] == 8
    assert run("advise", "hello").out == out  # `homerun advise`, as the issue names it
    # Below one CPU the command the advice gives asks for a whole CPU too, or it is refused.
    fake.advice = fake.advice.model_copy(update={"recommended_cpu": "1"})
    assert "(homerun services update hello --concurrency 8 --cpu 1)" in run("advise", "hello").out


def test_advise_ramp_flags_make_a_bounded_ramp_request(run: Run, fake: FakeClient) -> None:
    run("services", "advise", "hello", "--path", "/produtos", "--duration", "20",
        "--target-rps", "200", "--method", "post")  # fmt: skip
    [(_, ramp)] = fake.called("advise")
    assert ramp == RampRequest(path="/produtos", method="POST", duration_seconds=20, target_rps=200)
    run("services", "advise", "hello", "--ramp")
    assert fake.called("advise")[-1][1] == RampRequest()


def test_advise_refuses_a_ramp_out_of_bounds_saying_which_flag(run: Run, fake: FakeClient) -> None:
    result = run("services", "advise", "hello", "--duration", "3600", "--path", "x")
    assert result.code != 0
    assert "--duration: Input should be less than or equal to 300" in result.err
    assert "--path: String should match pattern" in result.err
    assert not fake.called("advise")


def test_advise_draws_the_ramp_to_a_png(run: Run, fake: FakeClient, tmp_path: Path) -> None:
    steps = [
        RampStep(concurrency=level, seconds=2, requests=level * 2, errors=0,
                 requests_per_second=min(level, 40) * 0.99, p50_ms=1000.0 * max(1, level / 40),
                 p99_ms=1010.0 * max(1, level / 40))
        for level in (1, 2, 4, 8, 16, 32, 40, 64)
    ]  # fmt: skip
    ramp = RampResult(steps=steps, knee=40, knee_rps=39.6, instance="hello-advise-ab", seconds=18)
    fake.advice = fake.advice.model_copy(update={"ramp": ramp, "recommended_concurrency": 40})
    chart = tmp_path / "ramp.png"
    out = run("services", "advise", "hello", "--path", "/produtos", "--chart", str(chart)).out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart: {chart}" in out
    assert "       40      39.6      1000      1010       0  <- knee" in out
    refused = run("services", "advise", "hello", "--chart", str(tmp_path / "no" / "x.png"))
    assert refused.code != 0 and "--chart: cannot write" in refused.err


def test_export_prints_the_knative_or_cloud_run_document_as_yaml(
    run: Run, fake: FakeClient
) -> None:
    knative = yaml.safe_load(run("services", "export", "hello").out)
    assert knative["kind"] == "Service" and knative["cloud_run"] is False
    assert fake.calls[-1] == ("export_service", ("hello", False, None))
    image = f"registry.example.com/x@sha256:{'1' * 64}"
    cloud = yaml.safe_load(run("services", "export", "hello", "--cloud-run", "--image", image).out)
    assert cloud["cloud_run"] is True
    assert cloud["spec"]["template"]["spec"]["containers"][0]["image"] == image
    # gcloud's spelling: `describe --format export` is the Cloud Run form.
    described = yaml.safe_load(run("services", "describe", "hello", "--format", "export").out)
    assert described["cloud_run"] is True
    assert fake.calls[-1] == ("export_service", ("hello", True, None))
