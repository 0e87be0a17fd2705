"""`homerun jobs executions ...`: list, describe, cancel and delete executions; and starting one
(`jobs execute`), following it with --wait."""

from __future__ import annotations

import argparse
import json

from homerun.cli._commands import Group, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.errors import HomerunError
from homerun.model.jobs import ExecutionOverrides, ExecutionStatus, TaskStatus, format_duration
from homerun.model.logs import LogEntry
from homerun.model.views import ExecutionDescription, ExecutionSummary
from homerun.progress import Progress

POLL_SECONDS = 1.0
EXECUTION = positional("execution", "EXECUTION", "the execution's name, e.g. report-x7k2p")
FORMAT = flag("--format", choices=["text", "json"], default="text", help="json: homerun's summary")


def start(context: Context, job: str, overrides: ExecutionOverrides, *, wait: bool) -> int:
    """`jobs execute` (and `--execute-now`): start an execution; with `wait`, follow it to its
    end and exit non-zero unless it succeeded."""
    execution = context.client_starting_daemon().execute_job(job, overrides)
    name = execution.name
    if not wait:
        print(f"Execution [{name}] has successfully started running.")
        print("\nView details about this execution by running:")
        print(f"homerun jobs executions describe {name}")
        return 0
    print(f"Execution [{name}] has started: {execution.task_count} task(s).")
    final = follow(context, execution)
    if final.status == ExecutionStatus.SUCCEEDED:
        print(f"Execution [{name}] has successfully completed: {final.message}.")
        return 0
    raise HomerunError(
        f"execution {name} {final.status}: {final.message}\n"
        f"`homerun jobs logs read {final.job} --execution {name}` shows what its tasks printed."
    )


def follow(context: Context, execution: ExecutionDescription) -> ExecutionDescription:
    """Poll the execution until it ends, saying how many tasks are done as that changes."""
    client = context.client()
    shown = ""
    with Progress() as progress:
        while execution.status == ExecutionStatus.RUNNING:
            now = progress_line(execution)
            if now != shown:
                progress.step(now)
                shown = now
            context.sleep(POLL_SECONDS)
            execution = client.execution(execution.name)
    return execution


def progress_line(execution: ExecutionSummary) -> str:
    done = execution.succeeded + execution.failed
    line = f"{done}/{execution.task_count} tasks done, {execution.running} running"
    if execution.failed:
        line += f", {execution.failed} failed"
    if execution.retries:
        line += f", {execution.retries} retried"
    return line


def line(execution: ExecutionSummary) -> str:
    """One execution in a list: name, status, tasks done, when."""
    return (
        f"{execution.name:<40} {execution.status:<10} "
        f"{execution.succeeded}/{execution.task_count} succeeded  {when(execution.created_at)}"
    )


def print_entry(entry: LogEntry, format: str) -> None:
    if format == "json":
        print(json.dumps(entry), flush=True)
        return
    where = entry.get("execution") or entry.get("job", "")
    if entry.get("task") is not None:
        where += f" task {entry['task']}"
        if entry.get("attempt"):
            where += f" (attempt {entry['attempt']})"
    print(f"{entry['timestamp']} {entry['severity']:<8} {where}: {entry['message']}", flush=True)


@command(
    "list",
    "list executions, newest first",
    flag("--job", help="only this job's executions"),
    FORMAT,
    examples=[
        ("List the executions of a job", "homerun jobs executions list --job job-quickstart")
    ],
)
def list_executions(arguments: argparse.Namespace, context: Context) -> int:
    listed = context.client().executions(arguments.job)
    if arguments.format == "json":
        print_json(listed)
        return 0
    print(f"{'EXECUTION':<40} {'JOB':<24} {'STATUS':<10} {'RUNNING':<8} {'COMPLETE':<9} CREATED")
    for execution in listed:
        complete = f"{execution.succeeded}/{execution.task_count}"
        print(
            f"{execution.name:<40} {execution.job:<24} {execution.status:<10} "
            f"{execution.running:<8} {complete:<9} {when(execution.created_at)}"
        )
    return 0


@command(
    "describe",
    "an execution's tasks: how each went, and why the failed ones failed",
    EXECUTION,
    FORMAT,
    examples=[
        ("See how an execution went", "homerun jobs executions describe job-quickstart-x7k2p")
    ],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    execution = context.client().execution(arguments.execution)
    if arguments.format == "json":
        print_json(execution)
        return 0
    print(f"Execution {execution.name} of job {execution.job}")
    print(
        f"  Status:        {execution.status}"
        + (
            " (cancelling)"
            if execution.cancel_requested and execution.status == ExecutionStatus.RUNNING
            else ""
        )
    )
    if execution.message:
        print(f"  Result:        {execution.message}")
    print(
        f"  Tasks:         {execution.task_count}: {execution.succeeded} succeeded, "
        f"{execution.failed} failed, {execution.running} running, {execution.pending} waiting"
        + (f", {execution.cancelled} cancelled" if execution.cancelled else "")
    )
    print(f"  Retries:       {execution.retries}")
    print(f"  Parallelism:   {execution.parallelism or 'as many as possible'}")
    print(f"  Max retries:   {execution.max_retries}")
    print(f"  Task timeout:  {format_duration(execution.task_timeout_seconds)}")
    print(f"  Entrypoint:    {' '.join(execution.entrypoint)}")
    print(f"  Created:       {when(execution.created_at)}")
    if execution.completed_at is not None:
        elapsed = format_duration(round(execution.completed_at - execution.created_at))
        print(f"  Completed:     {when(execution.completed_at)} (elapsed {elapsed})")
    notable = [
        task
        for task in execution.tasks
        if task.status in (TaskStatus.FAILED, TaskStatus.RUNNING, TaskStatus.RETRYING)
    ]
    for task in notable:
        why = f": {task.last_failure}" if task.last_failure else ""
        label = f"Task {task.index}:"
        print(f"  {label:<15}{task.status} after {task.attempts} attempt(s){why}")
    print(f"  Logs:          homerun jobs logs read {execution.job} --execution {execution.name}")
    return 0


@command(
    "cancel",
    "cancel a running execution: its running tasks stop, no other starts",
    EXECUTION,
    examples=[("Cancel an execution", "homerun jobs executions cancel job-quickstart-x7k2p -q")],
)
def cancel(arguments: argparse.Namespace, context: Context) -> int:
    context.confirm(f"Execution [{arguments.execution}] will be cancelled.", quiet=arguments.quiet)
    context.client().cancel_execution(arguments.execution)
    print(f"Execution [{arguments.execution}] is being cancelled.")
    return 0


@command(
    "delete",
    "delete an execution that has ended",
    EXECUTION,
    examples=[("Delete an execution", "homerun jobs executions delete job-quickstart-x7k2p -q")],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    context.confirm(f"Execution [{arguments.execution}] will be deleted.", quiet=arguments.quiet)
    context.client().delete_execution(arguments.execution)
    print(f"Deleted execution [{arguments.execution}].")
    return 0


GROUP = Group(
    "executions",
    "list, describe, cancel and delete executions of jobs",
    (list_executions, describe, cancel, delete),
)
