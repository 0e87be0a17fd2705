"""`homerun jobs ...`: jobs that run tasks to completion (create, deploy, update, describe,
list, delete, execute, logs); `jobs executions ...` is in cli/executions.py."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from homerun.cli import executions, flags
from homerun.cli._commands import FlagGroup, Group, command, flag, one_of, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.cli.deploy import source_folder
from homerun.cli.flags import _command
from homerun.cli.logs import TAIL_BACKLOG, TAIL_BATCH, TAIL_POLL_SECONDS
from homerun.errors import HomerunError, NotFound
from homerun.knative.job import parse_job, render_job
from homerun.model.cron import parse_cron, time_zone
from homerun.model.durations import parse_duration
from homerun.model.events import BuildLine, Failed, JobDeployed, JobEvent, Phase
from homerun.model.images import parse_image_name
from homerun.model.jobs import (
    MAX_RETRIES,
    MAX_TASK_TIMEOUT_SECONDS,
    MAX_TASKS,
    ExecutionOverrides,
    TaskSettingsChanges,
    format_duration,
    validate_job_name,
)
from homerun.model.views import JobSummary
from homerun.progress import Progress
from homerun.spec import (
    RevisionChanges,
    check_cpu,
    check_memory,
    check_range,
    parse_env_vars,
    parse_list,
)

JOB = positional("job", "JOB", "the job's name: lowercase letters, digits and -")
FORMAT = flag("--format", choices=["text", "json"], default="text", help="json: homerun's summary")

TASKS = FlagGroup(
    "tasks",
    (
        flag(
            "--tasks",
            type=int,
            metavar="N",
            help=f"how many tasks an execution runs: 1-{MAX_TASKS} (default 1)",
        ),
        flag(
            "--parallelism",
            type=int,
            metavar="N",
            help="most tasks running at once; 0: as many as possible (default 0)",
        ),
        flag(
            "--max-retries",
            type=int,
            metavar="N",
            help=f"times a failed task is tried again: 0-{MAX_RETRIES} (default 3)",
        ),
        flag(
            "--task-timeout",
            metavar="DURATION",
            help="time each attempt of a task may run, e.g. 600, 10m, 1h (default 10m)",
        ),
    ),
)

CONTAINER = FlagGroup(
    "container",
    (
        flag(
            "--command",
            metavar="COMMAND,...",
            help="the entrypoint, comma-separated (or one shell command)",
        ),
        flag("--args", metavar="ARG,...", help="its arguments, comma-separated"),
        flag("--cpu", help="CPU limit per instance, default 1 (e.g. 1, 2, 500m)"),
        flag("--memory", help="memory limit per instance, default 512Mi (e.g. 512Mi, 2Gi)"),
        flag(
            "--service-account",
            metavar="EMAIL",
            help="the identity its tasks call services with, from the metadata server (default: "
            "the job's own, JOB@PROJECT.iam.gserviceaccount.com; '' goes back to it)",
        ),
    ),
)

SCHEDULE = FlagGroup(
    "schedule",
    (
        flag(
            "--schedule",
            metavar="CRON",
            help="execute the job on this unix-cron schedule, e.g. '*/5 * * * *' or "
            "'0 9 * * MON-FRI'; runs missed while homerun is down are skipped",
        ),
        flag("--time-zone", metavar="TZ", help="the schedule's time zone (default UTC)"),
        flag("--clear-schedule", action="store_true", help="execute it on demand only"),
    ),
)

EXECUTE_NOW = FlagGroup(
    "execution",
    (
        flag("--execute-now", action="store_true", help="execute the job once it is deployed"),
        flag("--wait", action="store_true", help="with --execute-now: wait until it completes"),
    ),
)

JOB_FLAGS = (
    CONTAINER,
    TASKS,
    flags.ENV_VARS,
    flags.SECRETS,
    flags.VOLUMES,
    SCHEDULE,
    EXECUTE_NOW,
)


def _deploy_command(mode: str, summary: str, description: str, examples: Any) -> Any:
    source_help = (
        "the folder of the job's code (default: the current folder)"
        if mode != "update"
        else "rebuild from this folder (default: keep the job's code)"
    )
    return command(
        mode,
        summary,
        JOB,
        one_of(
            flag("--source", metavar="DIR", help=source_help),
            flag(
                "--image",
                metavar="IMAGE",
                help="an image of the local store (`homerun builds submit --tag IMAGE`) or of "
                "podman's; each task is then a container of it when podman built it",
            ),
        ),
        *JOB_FLAGS,
        examples=examples,
        description=description,
    )


def _deploy(mode: str, arguments: argparse.Namespace, context: Context) -> int:
    job = validate_job_name(arguments.job)
    if arguments.wait and not arguments.execute_now:
        raise HomerunError("--wait goes with --execute-now: it waits for that execution")
    if arguments.image is not None:
        parse_image_name(arguments.image, "--image")
        changes = _changes(arguments, None).model_copy(update={"image": arguments.image})
    else:
        given = arguments.source
        source = None if mode == "update" and given is None else str(source_folder(given))
        changes = _changes(arguments, source)
    settings = task_settings(arguments)
    schedule, zone = _schedule(arguments)
    client = context.client_starting_daemon()
    deployed = _follow(client.deploy_job(job, changes, settings, mode, schedule, zone))
    if deployed.unchanged:
        print(f"Job [{job}] is unchanged.")
    else:
        print(f"Job [{job}] has successfully been {'created' if deployed.created else 'updated'}.")
    if arguments.execute_now:
        return executions.start(context, job, ExecutionOverrides(), wait=arguments.wait)
    print(f"\nTo execute this job, use:\nhomerun jobs execute {job}")
    return 0


@_deploy_command(
    "create",
    "create a job from source or an image: its tasks run to completion when it is executed",
    "Build the code in --source (or take the image --image names, pinned to its digest) into a "
    "new job. A job does not listen: each of its tasks is a process (a container of an image "
    "podman built) that runs to completion (CLOUD_RUN_TASK_INDEX tells it which one it is); "
    "`homerun jobs execute` runs them, retrying failed ones up to --max-retries times.",
    [
        (
            "Create the Cloud Run jobs quickstart: 50 tasks, half failing at random",
            "homerun jobs create job-quickstart --source . --tasks 50 "
            "--set-env-vars SLEEP_MS=10000,FAIL_RATE=0.5 --max-retries 10",
        ),
        (
            "Create a job from an image built with `homerun builds submit --tag localhost/report`",
            "homerun jobs create report --image localhost/report --tasks 3",
        ),
    ],
)
def create(arguments: argparse.Namespace, context: Context) -> int:
    return _deploy("create", arguments, context)


@_deploy_command(
    "deploy",
    "create or update a job from source or an image",
    "Build the code in --source (or take the image --image names) into the job JOB, created if "
    "new. A flag not given keeps the "
    "job's current value.",
    [
        (
            "Deploy the job in this folder and run it once",
            "homerun jobs deploy report --source . --execute-now --wait",
        )
    ],
)
def deploy(arguments: argparse.Namespace, context: Context) -> int:
    return _deploy("deploy", arguments, context)


@_deploy_command(
    "update",
    "change a job's settings (and its code with --source or --image)",
    "Change the settings of the job JOB; a flag not given keeps its value. Executions already "
    "running keep the settings they started with.",
    [
        (
            "Run 10 tasks, 2 at a time",
            "homerun jobs update job-quickstart --tasks 10 --parallelism 2",
        )
    ],
)
def update(arguments: argparse.Namespace, context: Context) -> int:
    return _deploy("update", arguments, context)


def _changes(arguments: argparse.Namespace, source: str | None) -> RevisionChanges:
    volumes, volume_mounts = flags.volume_changes(arguments)
    return RevisionChanges(
        source=source,
        command=_command(arguments.command),
        args=parse_list(arguments.args) if arguments.args is not None else None,
        cpu=check_cpu(arguments.cpu, "--cpu") if arguments.cpu else None,
        memory=check_memory(arguments.memory, "--memory") if arguments.memory else None,
        env=flags.env_changes(arguments),
        secrets=flags.secret_changes(arguments),
        volumes=volumes,
        volume_mounts=volume_mounts,
        service_account=flags.service_account_change(arguments.service_account),
    )


def _schedule(arguments: argparse.Namespace) -> tuple[str | None, str | None]:
    """SCHEDULE, checked: ("", None) removes the schedule, (None, None) keeps it."""
    if arguments.clear_schedule and arguments.schedule is not None:
        raise HomerunError("--schedule and --clear-schedule cannot be used together")
    if arguments.clear_schedule:
        return "", None
    if arguments.schedule:
        parse_cron(arguments.schedule)
    if arguments.time_zone is not None:
        time_zone(arguments.time_zone)
    return arguments.schedule, arguments.time_zone


def task_settings(arguments: argparse.Namespace) -> TaskSettingsChanges:
    """TASKS as changes to the job's settings: a flag not given keeps its value."""
    for name, value, low, high in (
        ("--tasks", arguments.tasks, 1, MAX_TASKS),
        ("--parallelism", arguments.parallelism, 0, MAX_TASKS),
        ("--max-retries", arguments.max_retries, 0, MAX_RETRIES),
    ):
        if value is not None:
            check_range(name, value, low, high)
    return TaskSettingsChanges(
        task_count=arguments.tasks,
        parallelism=arguments.parallelism,
        max_retries=arguments.max_retries,
        task_timeout_seconds=task_timeout(arguments.task_timeout),
    )


def task_timeout(text: str | None) -> int | None:
    if text is None:
        return None
    return check_range(
        "--task-timeout", parse_duration(text, "--task-timeout"), 1, MAX_TASK_TIMEOUT_SECONDS
    )


def _follow(events: Iterable[JobEvent]) -> JobDeployed:
    """Show a job deploy's progress; its result, or HomerunError with the daemon's reason."""
    deployed = None
    with Progress() as progress:
        for event in events:
            if isinstance(event, BuildLine):
                if not event.line.startswith("entrypoint: "):  # the daemon's phase says it
                    progress.line(f"  {event.line}")
            elif isinstance(event, Phase):
                progress.step(event.message)
            elif isinstance(event, Failed):
                raise HomerunError(event.message)
            else:
                deployed = event
    if deployed is None:
        raise HomerunError("the daemon ended the job's deploy without a result; see its log")
    return deployed


@command(
    "execute",
    "run a job's tasks once: an execution",
    JOB,
    flag("--wait", action="store_true", help="wait until the execution completes, and say how"),
    flag("--async", dest="no_wait", action="store_true", help="return at once (the default)"),
    flag("--tasks", type=int, metavar="N", help="run this many tasks this time"),
    flag("--task-timeout", metavar="DURATION", help="this time's task timeout, e.g. 30s, 5m"),
    flag("--args", metavar="ARG,...", help="this time's arguments, comma-separated"),
    flag("--update-env-vars", metavar="KEY=VALUE,...", help="set these env vars this time"),
    examples=[
        ("Run the job and wait for its tasks", "homerun jobs execute job-quickstart --wait"),
        (
            "Run 3 tasks with a variable changed",
            "homerun jobs execute report --tasks 3 --update-env-vars DAY=monday",
        ),
    ],
    description="Start an execution of JOB: its tasks run as processes, each with "
    "CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION, CLOUD_RUN_TASK_INDEX, CLOUD_RUN_TASK_ATTEMPT and "
    "CLOUD_RUN_TASK_COUNT set; a task that exits non-zero or passes its timeout is tried again "
    "up to --max-retries times. The execution succeeds when every task does.",
)
def execute(arguments: argparse.Namespace, context: Context) -> int:
    job = validate_job_name(arguments.job)
    if arguments.wait and arguments.no_wait:
        raise HomerunError("--wait and --async cannot be used together")
    if arguments.tasks is not None:
        check_range("--tasks", arguments.tasks, 1, MAX_TASKS)
    overrides = ExecutionOverrides(
        task_count=arguments.tasks,
        task_timeout_seconds=task_timeout(arguments.task_timeout),
        args=parse_list(arguments.args) if arguments.args is not None else None,
        env=parse_env_vars(arguments.update_env_vars, "--update-env-vars")
        if arguments.update_env_vars
        else {},
    )
    return executions.start(context, job, overrides, wait=arguments.wait)


@command(
    "describe",
    "a job's settings and its latest executions",
    JOB,
    flag(
        "--format",
        choices=["text", "json", "yaml"],
        default="text",
        help="json: homerun's summary; yaml: Cloud Run's Job document (run.googleapis.com/v1)",
    ),
    examples=[
        ("See a job and how its executions went", "homerun jobs describe job-quickstart"),
        (
            "Save the job as Cloud Run's YAML, to edit and apply with `jobs replace`",
            "homerun jobs describe job-quickstart --format yaml > job.yaml",
        ),
    ],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    job = context.client().job(validate_job_name(arguments.job))
    if arguments.format == "json":
        print_json(job)
        return 0
    if arguments.format == "yaml":
        print(yaml.safe_dump(render_job(job, job.digest), sort_keys=False), end="")
        return 0
    _print_job(job)
    if job.recent_executions:
        print("  Executions (newest first):")
        for execution in job.recent_executions:
            print(f"    {executions.line(execution)}")
    return 0


def _print_job(job: JobSummary) -> None:
    print(f"Job {job.name}")
    if job.latest_execution is not None:
        latest = job.latest_execution
        print(
            f"  Executed {job.executions} time(s); last with execution {latest.name} "
            f"({latest.status}) at {when(latest.created_at)}"
        )
    if job.image:
        print(f"  Image:         {job.image}")
    if job.source or not job.image:
        print(f"  Source:        {job.source}")
    if job.container_image:
        print(f"  Runs as:       containers of {job.container_image} (podman)")
    print(f"  Entrypoint:    {' '.join(job.entrypoint)} ({job.entrypoint_origin})")
    print(f"  Tasks:         {job.task_count}")
    print(f"  Parallelism:   {job.parallelism or 'as many as possible'}")
    print(f"  Max retries:   {job.max_retries}")
    print(f"  Task timeout:  {format_duration(job.task_timeout_seconds)}")
    if job.schedule:
        following = f", next run at {when(job.next_run_at)}" if job.next_run_at else ""
        print(f"  Schedule:      {job.schedule} ({job.time_zone}){following}")
    if job.cpu or job.memory:
        print(f"  CPU / memory:  {job.cpu or '1'} / {job.memory or '512Mi'} per task")
    for name, value in job.env.items():
        print(f"  Env:           {name}={value}")
    for name, ref in job.secrets.items():
        print(f"  Secret:        {name} from {ref}")
    for path, ref in job.secret_files.items():
        print(f"  Secret file:   {path} from {ref} (read-only)")
    for path, volume in job.volume_mounts.items():
        size = job.volumes.get(volume)
        print(
            f"  Volume:        {path}: in-memory {volume}" + (f", at most {size}" if size else "")
        )


@command(
    "list",
    "list jobs with their latest execution",
    FORMAT,
    examples=[("List jobs", "homerun jobs list")],
)
def list_jobs(arguments: argparse.Namespace, context: Context) -> int:
    jobs = context.client().jobs()
    if arguments.format == "json":
        print_json(jobs)
        return 0
    print(f"{'JOB':<32} {'TASKS':<6} {'LAST EXECUTION':<40} {'STATUS':<10} CREATED")
    for job in jobs:
        latest = job.latest_execution
        print(
            f"{job.name:<32} {job.task_count:<6} {latest.name if latest else '-':<40} "
            f"{latest.status if latest else '-':<10} {when(job.created_at)}"
        )
    return 0


@command(
    "delete",
    "delete a job with its executions (running ones are cancelled) and logs",
    JOB,
    examples=[("Delete a job without being asked", "homerun jobs delete job-quickstart -q")],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    job = validate_job_name(arguments.job)
    context.confirm(f"Job [{job}] will be deleted.", quiet=arguments.quiet)
    context.client().delete_job(job)
    print(f"Deleted job [{job}].")
    return 0


@command(
    "replace",
    "create or update a job from Cloud Run's YAML (a run.googleapis.com/v1 Job)",
    positional("file", "FILE", "the Job document, YAML or JSON"),
    examples=[
        (
            "Edit a job's YAML and apply it",
            "homerun jobs describe report --format yaml > report.yaml && "
            "homerun jobs replace report.yaml",
        )
    ],
    description="Apply a Cloud Run Job document: its task count, parallelism, retries, "
    "timeout, command, args, env, secrets and limits replace the job's. Its image keeps the "
    "job's code when it is the job's artifact (as `describe --format yaml` prints it); "
    "otherwise the folder in the homerun.dev/source annotation is built.",
)
def replace(arguments: argparse.Namespace, context: Context) -> int:
    path = Path(arguments.file)
    document = _read_document(path)
    name = document.get("metadata", {}).get("name") if isinstance(document, dict) else None
    client = context.client_starting_daemon()
    current = None
    if isinstance(name, str) and name:
        try:
            current = client.job(validate_job_name(name)).digest
        except NotFound:
            current = None  # a new job: built from its homerun.dev/source folder
    manifest = parse_job(document, current_digest=current, where=str(path))
    changes = manifest.changes
    if changes.source is not None:
        changes = changes.model_copy(update={"source": str(source_folder(changes.source))})
    deployed = _follow(
        client.deploy_job(
            manifest.name,
            changes,
            manifest.settings,
            "deploy",
            manifest.schedule,
            manifest.time_zone,
        )
    )
    if deployed.unchanged:
        print(f"Job [{manifest.name}] is unchanged.")
    else:
        verb = "created" if deployed.created else "replaced"
        print(f"Job [{manifest.name}] has successfully been {verb}.")
    return 0


def _read_document(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise HomerunError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise HomerunError(f"{path} is not UTF-8 text: {error}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise HomerunError(f"{path} is not valid YAML: {error}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise HomerunError(f"{path} must hold one Cloud Run Job (a YAML or JSON mapping)")
    return json.loads(json.dumps(documents[0], default=str))


@command(
    "read",
    "a job's newest log entries: its tasks' output and how its executions went",
    JOB,
    flag("--execution", metavar="EXECUTION", help="only this execution's entries"),
    flag("--task", type=int, metavar="INDEX", help="with --execution: only this task's"),
    flag("--limit", type=int, default=50, metavar="N", help="how many entries, the newest"),
    FORMAT,
    examples=[
        (
            "Read what task 3 of an execution printed",
            "homerun jobs logs read job-quickstart --execution job-quickstart-x7k2p --task 3",
        )
    ],
)
def read_logs(arguments: argparse.Namespace, context: Context) -> int:
    job = validate_job_name(arguments.job)
    if arguments.limit < 1:
        raise HomerunError(f"--limit: must be at least 1, got {arguments.limit}")
    if arguments.task is not None and arguments.execution is None:
        raise HomerunError("--task needs --execution: task indexes are per execution")
    entries = context.client().job_logs(job, arguments.limit, arguments.execution, arguments.task)
    for entry in entries:
        executions.print_entry(entry, arguments.format)
    return 0


@command(
    "tail",
    "follow a job's log: its tasks' output and its executions' events, as they are written",
    JOB,
    flag("--execution", metavar="EXECUTION", help="only this execution's entries"),
    flag("--task", type=int, metavar="INDEX", help="with --execution: only this task's"),
    FORMAT,
    examples=[
        (
            "Watch an execution's tasks as they run (Ctrl-C stops)",
            "homerun jobs logs tail job-quickstart --execution job-quickstart-x7k2p",
        )
    ],
)
def tail_logs(arguments: argparse.Namespace, context: Context) -> int:
    job = validate_job_name(arguments.job)
    if arguments.task is not None and arguments.execution is None:
        raise HomerunError("--task needs --execution: task indexes are per execution")
    client = context.client()
    last: str | None = None
    for entry in client.job_logs(job, TAIL_BACKLOG, arguments.execution, arguments.task):
        executions.print_entry(entry, arguments.format)
        last = entry["timestamp"]
    while True:
        context.sleep(TAIL_POLL_SECONDS)
        for entry in client.job_logs(job, TAIL_BATCH, arguments.execution, arguments.task, last):
            executions.print_entry(entry, arguments.format)
            last = entry["timestamp"]


GROUP = Group(
    "jobs",
    "jobs: tasks that run to completion, executed on demand",
    (
        create,
        deploy,
        update,
        execute,
        describe,
        list_jobs,
        delete,
        replace,
        executions.GROUP,
        Group("logs", "read or follow a job's logs", (read_logs, tail_logs)),
    ),
)
