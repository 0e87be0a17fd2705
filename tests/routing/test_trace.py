"""routing/trace.py: the two trace headers Cloud Run sends, from what the client sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from homerun.routing.trace import TraceContext, trace_context

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SPAN = int(PARENT, 16)


def bits(*values: int) -> Callable[[int], int]:
    """Randomness that answers `values` in turn."""
    given = list(values)
    return lambda _width: given.pop(0)


def test_neither_header_starts_a_sampled_trace_named_in_both() -> None:
    got = trace_context(None, None, bits(0xABC, 0x12))
    trace_id = b"%032x" % 0xABC
    assert got == TraceContext(b"00-%s-0000000000000012-01" % trace_id, b"%s/18;o=1" % trace_id,
                               trace_id)  # fmt: skip


def test_a_traceparent_is_kept_and_gives_the_cloud_header() -> None:
    sent = b"00-%s-%s-01" % (TRACE, PARENT.encode())
    assert trace_context(sent, None, bits()) == TraceContext(sent, b"%s/%d;o=1" % (TRACE, SPAN),
                                                             TRACE)  # fmt: skip
    unsampled = b"00-%s-%s-00" % (TRACE, PARENT.encode())
    assert trace_context(unsampled, None, bits()).cloud == b"%s/%d;o=0" % (TRACE, SPAN)


def test_a_cloud_header_is_kept_and_gives_the_traceparent() -> None:
    sent = b"%s/%d;o=1" % (TRACE.upper(), SPAN)
    assert trace_context(None, sent, bits()) == TraceContext(
        b"00-%s-%s-01" % (TRACE, PARENT.encode()), sent, TRACE
    )
    # gcloud's and old clients' forms: no options (not sampled), no span (a new one).
    assert trace_context(None, b"%s/%d" % (TRACE, SPAN), bits()).traceparent.endswith(b"-00")
    assert trace_context(None, TRACE, bits(5)).traceparent == b"00-%s-%016x-00" % (TRACE, 5)


def test_both_pass_unchanged() -> None:
    parent = b"00-%s-%s-01" % (TRACE, PARENT.encode())
    cloud = b"%s/1;o=1" % (b"a" * 32)
    assert trace_context(parent, cloud, bits()) == TraceContext(parent, cloud, TRACE)


@pytest.mark.parametrize(
    "traceparent",
    [
        b"00-not-a-trace-0",
        b"00-%s-0000000000000000-01" % TRACE,  # a zero parent id
        b"00-%s-%s-01" % (b"0" * 32, PARENT.encode()),  # a zero trace id
        b"ff-%s-%s-01" % (TRACE, PARENT.encode()),  # version ff is invalid
        b"00-%s-%s-01-extra" % (TRACE, PARENT.encode()),  # version 00 has four fields
        b"00-%s-%s-01" % (TRACE.upper(), PARENT.encode()),  # upper case is invalid
    ],
)
def test_a_malformed_traceparent_counts_as_not_sent(traceparent: bytes) -> None:
    got = trace_context(traceparent, None, bits(7, 9))
    assert got.trace_id == b"%032x" % 7
    assert got.traceparent != traceparent


def test_a_later_version_is_read_as_version_00() -> None:
    sent = b"01-%s-%s-01-more" % (TRACE, PARENT.encode())
    assert trace_context(sent, None, bits()) == TraceContext(sent, b"%s/%d;o=1" % (TRACE, SPAN),
                                                             TRACE)  # fmt: skip


@pytest.mark.parametrize(
    "cloud", [b"xyz/1;o=1", b"%s/%d;o=1" % (TRACE, 1 << 64), b"%s/1;o=1" % (b"0" * 32)]
)
def test_a_malformed_cloud_header_counts_as_not_sent(cloud: bytes) -> None:
    assert trace_context(None, cloud, bits(7, 9)).trace_id == b"%032x" % 7
