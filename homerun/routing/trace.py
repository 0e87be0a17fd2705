"""Trace context as Cloud Run passes it: every request reaches the app with both a W3C
`traceparent` and Google's `X-Cloud-Trace-Context`, naming one trace. What the client sent is
kept; the header it did not send is derived from the one it did; neither: a new trace."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

# 00-<trace id: 32 hex>-<parent id: 16 hex>-<flags: 2 hex> (W3C Trace Context, version 00;
# later versions may append fields, which a version-00 reader ignores).
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# TRACE_ID/SPAN_ID;o=OPTIONS: 32 hex digits, a decimal span id (uint64), o=1 when sampled;
# the span and the options may be left out.
_CLOUD = re.compile(rb"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?")
_ZERO_TRACE = b"0" * 32
_MAX_SPAN = (1 << 64) - 1


class TraceContext(NamedTuple):
    traceparent: bytes  # the header's value to forward
    cloud: bytes  # X-Cloud-Trace-Context's
    trace_id: bytes  # 32 lowercase hex digits: the request log's trace


def trace_context(
    traceparent: bytes | None, cloud: bytes | None, random_bits: Callable[[int], int]
) -> TraceContext:
    """The two headers to forward. A malformed header counts as not sent (W3C: restart the
    trace); when both are sent and well formed, both pass unchanged."""
    if traceparent is None and cloud is None:  # most requests: a new trace, formatted once
        trace_bits = random_bits(128) or 1
        new_span = random_bits(64) or 1
        header = b"00-%032x-%016x-01" % (trace_bits, new_span)
        new_trace = header[3:35]
        return TraceContext(header, b"%s/%d;o=1" % (new_trace, new_span), new_trace)
    parent = _parse_traceparent(traceparent) if traceparent is not None else None
    google = _parse_cloud(cloud) if cloud is not None else None
    if parent is not None and google is not None and cloud is not None:
        return TraceContext(traceparent or b"", cloud, parent[0])
    if parent is not None:
        trace_id, span, sampled = parent
        return TraceContext(traceparent or b"", b"%s/%d;o=%d" % (trace_id, span, sampled), trace_id)
    if google is not None and cloud is not None:
        trace_id, span, sampled = google
        if span == 0:
            span = random_bits(64) or 1
        return TraceContext(b"00-%s-%016x-%02x" % (trace_id, span, sampled), cloud, trace_id)
    trace_id = b"%032x" % (random_bits(128) or 1)
    span = random_bits(64) or 1
    return TraceContext(
        b"00-%s-%016x-01" % (trace_id, span), b"%s/%d;o=1" % (trace_id, span), trace_id
    )


def _parse_traceparent(value: bytes) -> tuple[bytes, int, int] | None:
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest) or trace_id == _ZERO_TRACE:
        return None
    span = int(parent_id, 16)
    if span == 0:
        return None
    return trace_id, span, int(flags, 16) & 1


def _parse_cloud(value: bytes) -> tuple[bytes, int, int] | None:
    match = _CLOUD.fullmatch(value.strip())
    if match is None:
        return None
    trace_id, span, options = match.groups()
    trace_id = trace_id.lower()
    if trace_id == _ZERO_TRACE:
        return None
    span_id = int(span) if span else 0
    if span_id > _MAX_SPAN:
        return None
    return trace_id, span_id, 1 if options == b"1" else 0
