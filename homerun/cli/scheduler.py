"""`homerun scheduler jobs ...`: Cloud Scheduler's HTTP jobs, a URL of this machine called on a
cron schedule (create http, list, describe, delete, pause, resume, run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from homerun.cli._commands import Group, command, flag, one_of, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.errors import HomerunError
from homerun.model.cron import parse_cron, time_zone
from homerun.model.scheduler import (
    CallAttempt,
    HttpTarget,
    SchedulerJobRequest,
    SchedulerJobView,
    validate_scheduler_job_name,
)

JOB = positional("job", "JOB", "the scheduler job's name: letters, digits, - and _")
FORMAT = flag("--format", choices=["text", "json"], default="text", help="json: homerun's view")
LOCATION = flag("--location", metavar="REGION", help="accepted for gcloud; homerun has one")


@command(
    "http",
    "create a job that calls a URL on a schedule",
    JOB,
    flag("--schedule", required=True, metavar="CRON", help="unix-cron, e.g. '*/5 * * * *'"),
    flag("--uri", required=True, metavar="URL", help="a service's URL or a loopback URL"),
    flag(
        "--http-method",
        default="POST",
        metavar="METHOD",
        help="POST (default), GET, PUT, DELETE, PATCH, HEAD or OPTIONS",
    ),
    one_of(
        flag("--message-body", metavar="BODY", help="the request's body"),
        flag("--message-body-from-file", metavar="FILE", help="the body, read from FILE"),
    ),
    flag("--headers", metavar="KEY=VALUE,...", help="the request's headers, comma-separated"),
    flag("--time-zone", default="UTC", metavar="TZ", help="the schedule's time zone"),
    flag(
        "--oidc-service-account-email",
        metavar="EMAIL",
        help="send an ID token of this service account (Authorization: Bearer)",
    ),
    flag(
        "--oidc-token-audience",
        metavar="AUDIENCE",
        help="the token's audience (default: the URL without its path: the service's URL)",
    ),
    flag("--description", metavar="TEXT", help="what the job is for"),
    LOCATION,
    examples=[
        (
            "Call a private service every 5 minutes with an ID token",
            "homerun scheduler jobs create http report-every-5 --schedule '*/5 * * * *' "
            "--uri http://report.localhost:8080/run --http-method POST "
            "--oidc-service-account-email scheduler@my-project.iam.gserviceaccount.com",
        )
    ],
    description="Create a scheduler job that calls --uri on --schedule, as Cloud Scheduler "
    "does: a URL of one of this homerun's services, or any loopback URL (nothing beyond this "
    "machine). With --oidc-service-account-email each call carries an ID token of that "
    "account for --oidc-token-audience; grant it roles/run.invoker on a private service. Runs "
    "missed while homerun is down or the job is paused are skipped, not made up; a failed call "
    "is recorded and logged, not retried (Cloud Scheduler's default retry count is 0).",
)
def create_http(arguments: argparse.Namespace, context: Context) -> int:
    name = validate_scheduler_job_name(arguments.job)
    parse_cron(arguments.schedule)
    time_zone(arguments.time_zone)
    body = arguments.message_body
    if arguments.message_body_from_file is not None:
        try:
            body = Path(arguments.message_body_from_file).read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise HomerunError(f"--message-body-from-file: cannot read it: {error}") from None
    target = HttpTarget(
        uri=arguments.uri,
        http_method=arguments.http_method,
        body=body,
        headers=parse_headers(arguments.headers),
        oidc_service_account_email=arguments.oidc_service_account_email,
        oidc_token_audience=arguments.oidc_token_audience,
    )
    request = SchedulerJobRequest(
        name=name,
        schedule=arguments.schedule,
        time_zone=arguments.time_zone,
        target=target,
        description=arguments.description,
    )
    job = context.client_starting_daemon().create_scheduler_job(request)
    print(f"Created scheduler job [{job.name}].")
    if job.next_run is not None:
        print(f"Next run: {when(job.next_run)}")
    return 0


def parse_headers(text: str | None) -> dict[str, str]:
    """`--headers K=V,K2=V2` as gcloud reads it."""
    headers: dict[str, str] = {}
    if not text:
        return headers
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise HomerunError(f"--headers: {item!r} is not KEY=VALUE; write Key=value,Key2=value2")
        headers[key.strip()] = value
    return headers


@command(
    "list",
    "list scheduler jobs",
    FORMAT,
    LOCATION,
    examples=[("List scheduler jobs", "homerun scheduler jobs list")],
)
def list_jobs(arguments: argparse.Namespace, context: Context) -> int:
    jobs = context.client().scheduler_jobs()
    if arguments.format == "json":
        print_json(jobs)
        return 0
    print(f"{'ID':<32} {'SCHEDULE (TZ)':<32} {'TARGET':<48} {'STATE':<9} LAST CALL")
    for job in jobs:
        schedule = f"{job.schedule} ({job.time_zone})"
        last = _outcome(job.attempts[0]) if job.attempts else "-"
        target = f"{job.target.http_method} {job.target.uri}"
        print(f"{job.name:<32} {schedule:<32} {target:<48} {job.state:<9} {last}")
    return 0


@command(
    "describe",
    "show a scheduler job: its target, state, next run and newest calls",
    JOB,
    FORMAT,
    LOCATION,
    examples=[("Describe a scheduler job", "homerun scheduler jobs describe report-every-5")],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    job = context.client().scheduler_job(arguments.job)
    if arguments.format == "json":
        print_json(job)
        return 0
    print_job(job)
    return 0


def print_job(job: SchedulerJobView) -> None:
    target = job.target
    print(f"Scheduler job {job.name}")
    if job.description:
        print(f"  Description:   {job.description}")
    print(f"  State:         {job.state}")
    print(f"  Schedule:      {job.schedule} ({job.time_zone})")
    next_run = when(job.next_run) if job.next_run is not None else "none while paused"
    print(f"  Next run:      {next_run}")
    print(f"  Target:        {target.http_method} {target.uri}")
    for key, value in target.headers.items():
        print(f"  Header:        {key}: {value}")
    if target.body is not None:
        print(f"  Body:          {len(target.body.encode())} bytes")
    if target.oidc_service_account_email:
        print(f"  OIDC token:    {target.oidc_service_account_email} for {target.audience}")
    print(f"  Created:       {when(job.created_at)}")
    if not job.attempts:
        print("  Calls:         none yet")
    for attempt in job.attempts:
        what = f"run of {when(attempt.scheduled_for)}" if attempt.scheduled_for else "run now"
        print(f"  Call:          {when(attempt.started_at)} ({what}): {_outcome(attempt)}")


def _outcome(attempt: CallAttempt) -> str:
    if attempt.succeeded:
        return f"{attempt.status_code} in {attempt.duration_seconds:g}s"
    return f"FAILED: {attempt.error}"


@command(
    "delete",
    "delete a scheduler job",
    JOB,
    LOCATION,
    examples=[("Delete a job without being asked", "homerun scheduler jobs delete nightly -q")],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    context.confirm(f"Scheduler job [{arguments.job}] will be deleted.", quiet=arguments.quiet)
    context.client().delete_scheduler_job(arguments.job)
    print(f"Deleted scheduler job [{arguments.job}].")
    return 0


@command(
    "pause",
    "pause a scheduler job: its runs are skipped until it is resumed",
    JOB,
    LOCATION,
    examples=[("Pause a job", "homerun scheduler jobs pause nightly")],
)
def pause(arguments: argparse.Namespace, context: Context) -> int:
    context.client().scheduler_job_action(arguments.job, "pause")
    print(f"Job has been paused: [{arguments.job}].")
    return 0


@command(
    "resume",
    "resume a paused scheduler job (the runs it missed are not made up)",
    JOB,
    LOCATION,
    examples=[("Resume a job", "homerun scheduler jobs resume nightly")],
)
def resume(arguments: argparse.Namespace, context: Context) -> int:
    job = context.client().scheduler_job_action(arguments.job, "resume")
    print(f"Job has been resumed: [{arguments.job}].")
    if job.next_run is not None:
        print(f"Next run: {when(job.next_run)}")
    return 0


@command(
    "run",
    "call a scheduler job's target now, and say what came back",
    JOB,
    LOCATION,
    examples=[("Run a job now", "homerun scheduler jobs run nightly")],
)
def run(arguments: argparse.Namespace, context: Context) -> int:
    attempt = context.client().run_scheduler_job(arguments.job)
    print(f"Ran [{arguments.job}]: {_outcome(attempt)}")
    return 0 if attempt.succeeded else 1


GROUP = Group(
    "scheduler",
    "Cloud Scheduler's HTTP jobs: call a URL on a cron schedule",
    (
        Group(
            "jobs",
            "scheduler jobs",
            (Group("create", "create a scheduler job", (create_http,)), list_jobs, describe,
             delete, pause, resume, run),
        ),
    ),
)  # fmt: skip
