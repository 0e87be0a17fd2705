"""Cloud Run's run.googleapis.com/v1 Job document: rendered from a job, read back into the
request `jobs deploy` sends, and every problem of a bad document at its field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from homerun.errors import InvalidSpec
from homerun.knative.job import parse_job, render_job
from homerun.model.views import JobSummary
from homerun.spec import MemoryVolume

DIGEST = "ab" * 32


def summary(**fields: Any) -> JobSummary:
    values: dict[str, Any] = {
        "name": "report",
        "created_at": 1_700_000_000.0,
        "updated_at": 1_700_000_100.0,
        "generation": 2,
        "source": "/srv/report",
        "entrypoint": ["python", "main.py", "--fast"],
        "entrypoint_origin": "--command and --args",
        "env": {"SLEEP_MS": "10"},
        "secrets": {"DB": "db-url:latest"},
        "cpu": "1",
        "memory": "512Mi",
        "task_count": 50,
        "parallelism": 5,
        "max_retries": 10,
        "task_timeout_seconds": 1200,
        "executions": 0,
        "latest_execution": None,
        "command": ["python", "main.py"],
        "args": ["--fast"],
        "schedule": "*/5 * * * *",
        "time_zone": "Europe/Paris",
    }
    return JobSummary(**(values | fields))


def test_a_job_renders_as_cloud_runs_job_document() -> None:
    document = render_job(summary(), DIGEST)
    assert document["apiVersion"] == "run.googleapis.com/v1" and document["kind"] == "Job"
    assert document["metadata"]["annotations"] == {
        "homerun.dev/schedule": "*/5 * * * *",
        "homerun.dev/source": "/srv/report",
        "homerun.dev/time-zone": "Europe/Paris",
    }
    execution = document["spec"]["template"]["spec"]
    assert (execution["taskCount"], execution["parallelism"]) == (50, 5)
    task = execution["template"]["spec"]
    assert (task["maxRetries"], task["timeoutSeconds"]) == (10, "1200")
    (container,) = task["containers"]
    assert container["image"] == f"homerun.local/report@sha256:{DIGEST}"
    assert container["command"] == ["python", "main.py"] and container["args"] == ["--fast"]
    assert container["env"] == [
        {"name": "SLEEP_MS", "value": "10"},
        {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db-url", "key": "latest"}}},
    ]
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "512Mi"}}
    assert document["status"]["executionCount"] == 0


def test_read_back_it_keeps_the_code_and_sets_everything_else() -> None:
    manifest = parse_job(render_job(summary(), DIGEST), current_digest=DIGEST)
    assert manifest.name == "report" and manifest.digest == DIGEST
    changes = manifest.changes
    assert changes.source is None  # the image is the job's artifact: no build
    assert (changes.command, changes.args) == (["python", "main.py"], ["--fast"])
    assert changes.env.replace == {"SLEEP_MS": "10"}
    assert {k: str(v) for k, v in (changes.secrets.replace or {}).items()} == {
        "DB": "db-url:latest"
    }
    assert (changes.cpu, changes.memory) == ("1", "512Mi")
    settings = manifest.settings
    assert (settings.task_count, settings.parallelism) == (50, 5)
    assert (settings.max_retries, settings.task_timeout_seconds) == (10, 1200)
    assert (manifest.schedule, manifest.time_zone) == ("*/5 * * * *", "Europe/Paris")


def test_another_image_or_none_is_built_from_the_source_annotation() -> None:
    document = render_job(summary(schedule=None, command=None, args=None), DIGEST)
    other = parse_job(document, current_digest="cd" * 32)
    assert other.changes.source == "/srv/report"
    assert (other.changes.command, other.changes.args) == ([], [])  # back to the default
    assert other.schedule == ""  # no schedule: removed
    del document["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert parse_job(document).changes.source == "/srv/report"
    del document["metadata"]["annotations"]["homerun.dev/source"]
    with pytest.raises(InvalidSpec, match=r"containers\[0\]\.image: required: a homerun artifact"):
        parse_job(document)


def test_a_minimal_document_gets_cloud_runs_defaults() -> None:
    document = {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {"name": "tiny", "annotations": {"homerun.dev/source": "/srv/tiny"}},
        "spec": {"template": {"spec": {"template": {"spec": {"containers": [{}]}}}}},
    }
    settings = parse_job(document).settings
    assert (settings.task_count, settings.parallelism) == (1, 0)
    assert (settings.max_retries, settings.task_timeout_seconds) == (3, 600)


def test_every_problem_is_named_at_its_field() -> None:
    document = render_job(summary(), DIGEST)
    bad = copy.deepcopy(document)
    bad["apiVersion"] = "serving.knative.dev/v1"
    execution = bad["spec"]["template"]["spec"]
    execution["taskCount"] = 0
    task = execution["template"]["spec"]
    task["timeoutSeconds"] = "ten minutes"
    container = task["containers"][0]
    container["ports"] = [{"containerPort": 8080}]
    container["env"].append({"name": "CLOUD_RUN_TASK_INDEX", "value": "1"})
    container["image"] = "gcr.io/p/report"
    with pytest.raises(InvalidSpec) as raised:
        parse_job(bad, where="job.yaml")
    message = str(raised.value)
    assert message.startswith("job.yaml is not a valid Cloud Run Job (6 problems):")
    for expected in (
        "apiVersion: must be run.googleapis.com/v1, got 'serving.knative.dev/v1'",
        "spec.template.spec.taskCount: must be between 1 and 10000, got 0",
        "spec.template.spec.template.spec.timeoutSeconds:",
        "containers[0].ports: a job's tasks do not listen: a job has no ports",
        "containers[0].env: CLOUD_RUN_TASK_INDEX is reserved",
        "containers[0].image: 'gcr.io/p/report' is not a homerun artifact",
    ):
        assert expected in message, message


def test_secret_files_and_volumes_render_and_read_back() -> None:
    job = summary(
        secret_files={"/secrets/api-key": "api-key:latest", "/secrets/old": "api-key:1"},
        volumes={"scratch": "64Mi"},
        volume_mounts={"/scratch": "scratch"},
    )
    task = render_job(job, DIGEST)["spec"]["template"]["spec"]["template"]["spec"]
    assert task["volumes"] == [
        {
            "name": "secret-1",
            "secret": {
                "secretName": "api-key",
                "items": [{"key": "latest", "path": "api-key"}, {"key": "1", "path": "old"}],
            },
        },
        {"name": "scratch", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    assert task["containers"][0]["volumeMounts"] == [
        {"name": "secret-1", "mountPath": "/secrets", "readOnly": True},
        {"name": "scratch", "mountPath": "/scratch"},
    ]
    changes = parse_job(render_job(job, DIGEST), current_digest=DIGEST).changes
    assert {k: str(v) for k, v in (changes.secrets.replace or {}).items()} == {
        "DB": "db-url:latest",
        "/secrets/api-key": "api-key:latest",
        "/secrets/old": "api-key:1",
    }
    assert changes.volumes.replace == {"scratch": MemoryVolume(size_limit="64Mi")}
    assert changes.volume_mounts.replace == {"/scratch": "scratch"}


def test_a_mount_naming_no_volume_is_named_at_its_field() -> None:
    document = render_job(summary(), DIGEST)
    task = document["spec"]["template"]["spec"]["template"]["spec"]
    task["containers"][0]["volumeMounts"] = [{"name": "nope", "mountPath": "/x"}]
    with pytest.raises(InvalidSpec, match=r"containers\[0\]\.volumeMounts\[0\]\.name: no volume"):
        parse_job(document)
