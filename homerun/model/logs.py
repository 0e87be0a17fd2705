"""A log entry as homerun writes it and the admin API, the CLI and the dashboard read it: one
JSON object per line of a service's, job's or worker pool's log (observe/logs.py).

Fields are named as Cloud Logging's LogEntry names them where it has them, so that what an app
or a tool knows of Cloud Run's logs reads homerun's. Every field is optional: which ones an
entry has depends on who wrote it (a request, an instance's output line, the platform, a task).
"""

from __future__ import annotations

from typing import Any, TypedDict


class HttpRequest(TypedDict, total=False):
    """Cloud Logging's HttpRequest: what a request entry says of its request."""

    # Written by the router's request log (observe/telemetry.py).
    requestMethod: str
    requestUrl: str
    requestSize: str  # bytes, as a decimal string: Cloud Logging's int64 in JSON
    responseSize: str
    status: int  # absent when the request got no response
    latency: str  # a duration, e.g. "0.012345s"
    userAgent: str
    remoteIp: str
    protocol: str
    # The rest of Cloud Logging's HttpRequest, which an app's JSON line may carry (promoted).
    serverIp: str
    referer: str
    cacheLookup: bool
    cacheHit: bool
    cacheValidatedWithOriginServer: bool
    cacheFillBytes: str


class LogEntry(TypedDict, total=False):
    """One entry of a log. An app's JSON line keeps its own fields under jsonPayload; the ones
    Cloud Logging lifts onto the entry (trace, labels, httpRequest, ...) are lifted as the app
    wrote them, unchecked: the types say what they should be, not what an app may print."""

    timestamp: str  # RFC 3339 in UTC with microseconds, e.g. 2026-11-26T01:53:36.123456Z
    severity: str  # one of observe/logs.SEVERITIES
    message: str
    logName: str  # "requests", "stdout", "stderr", or "homerun" for the platform's own
    # Whose entry it is: a service's (its revision and instance when it has them), a job's.
    service: str
    revision: str
    instance: str
    job: str
    execution: str
    task: int  # the task's index in its execution
    attempt: int
    # An app's JSON line, whatever it holds.
    jsonPayload: dict[str, Any]
    httpRequest: HttpRequest
    # Cloud Logging's special fields: on a request entry, or lifted out of an app's JSON line.
    trace: str  # projects/PROJECT/traces/TRACE_ID (an app may write the bare id)
    spanId: str
    traceSampled: bool
    labels: dict[str, str]
    sourceLocation: dict[str, Any]  # file, line, function
    insertId: str
    operation: dict[str, Any]  # id, producer, first, last
    # homerun's own: a gRPC call's status code (its HTTP status is 200), on its request entry.
    grpcStatus: int
    # homerun's own: on a scaling decision's entry, the instance count decided and the mode.
    desired: int
    mode: str
