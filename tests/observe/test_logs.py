import json
from pathlib import Path

import pytest

from homerun.errors import InvalidSpec
from homerun.observe.logs import LogStore, instance_entry, platform_entry


def test_json_lines_keep_fields_and_plain_lines_are_default(tmp_path: Path) -> None:
    structured = json.loads(
        instance_entry(
            "svc", "rev", "inst", "stdout",
            json.dumps({"severity": "warning", "message": "hi", "k": 1}),
        )
    )  # fmt: skip
    assert structured["severity"] == "WARNING" and structured["message"] == "hi"
    assert structured["jsonPayload"]["k"] == 1
    plain = json.loads(
        instance_entry("svc", "rev", "inst", "stderr", "Traceback (most recent call last):")
    )
    assert plain["severity"] == "DEFAULT" and plain["logName"] == "stderr"
    assert (plain["service"], plain["revision"], plain["instance"]) == ("svc", "rev", "inst")


def test_cloud_loggings_special_fields_are_promoted_to_the_entry() -> None:
    trace = "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    line = {
        "severity": "ERROR",
        "message": "boom",
        "logging.googleapis.com/trace": trace,
        "logging.googleapis.com/spanId": "00f067aa0ba902b7",
        "logging.googleapis.com/trace_sampled": True,
        "logging.googleapis.com/labels": {"user": "ada"},
        "logging.googleapis.com/sourceLocation": {"file": "main.py", "line": "7"},
        "httpRequest": {"requestMethod": "GET"},
        "kept": 1,
        "service": "an app's own field, not the entry's",
    }
    entry = json.loads(instance_entry("svc", "rev", "inst", "stdout", json.dumps(line)))
    assert entry["trace"] == trace and entry["spanId"] == "00f067aa0ba902b7"
    assert entry["traceSampled"] is True and entry["labels"] == {"user": "ada"}
    assert entry["sourceLocation"] == {"file": "main.py", "line": "7"}
    assert entry["httpRequest"] == {"requestMethod": "GET"}
    assert entry["service"] == "svc"
    assert entry["jsonPayload"] == {
        "severity": "ERROR",
        "message": "boom",
        "kept": 1,
        "service": "an app's own field, not the entry's",
    }


def test_read_filters_by_trace_in_either_form(tmp_path: Path) -> None:
    logs = LogStore(tmp_path)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    for message, trace in [("request", f"projects/p/traces/{trace_id}"), ("bare", trace_id),
                           ("other", "projects/p/traces/" + "1" * 32), ("none", None)]:  # fmt: skip
        entry = platform_entry("svc", message)
        if trace is not None:
            entry["trace"] = trace
        logs.emit(entry)
    assert [e["message"] for e in logs.read("svc", trace=trace_id)] == ["request", "bare"]
    assert [e["message"] for e in logs.read("svc", trace=f"projects/p/traces/{trace_id}")] == [
        "request",
        "bare",
    ]


@pytest.mark.parametrize(
    "line",
    ['say "hi" \\ to C:\\path', "tab\there\x01\x1f end", "Usuário ✓ 😀", "{not json}", "", "}"],
)
def test_any_output_line_becomes_valid_json_with_its_text_unchanged(line: str) -> None:
    entry = json.loads(instance_entry("svc", "rev", "inst", "stdout", line))
    assert entry["message"] == line and entry["severity"] == "DEFAULT"


def test_a_json_line_nested_too_deep_to_write_back_stays_text() -> None:
    line = '{"a": ' + "[" * 300 + "]" * 300 + "}"  # orjson reads 1,024 levels, writes 254
    entry = json.loads(instance_entry("svc", "rev", "inst", "stdout", line))
    assert entry["message"] == line and "jsonPayload" not in entry


def test_serialized_entries_are_stored_and_read_back_like_others(tmp_path: Path) -> None:
    logs = LogStore(tmp_path)
    logs.emit(platform_entry("svc", "from a dict"))
    logs.emit_serialized("svc", instance_entry("svc", "rev", "inst", "stdout", "a line"))
    assert [entry["message"] for entry in logs.recent("svc")] == ["from a dict", "a line"]
    assert [entry["message"] for entry in logs.read("svc")] == ["from a dict", "a line"]


def test_read_filters_by_revision_severity_and_time(tmp_path: Path) -> None:
    logs = LogStore(tmp_path)
    for index, (revision, severity) in enumerate(
        [("r1", "INFO"), ("r2", "ERROR"), ("r1", "WARNING"), ("r2", "DEFAULT")]
    ):
        entry = platform_entry("svc", f"m{index}", severity=severity, revision=revision)
        entry["timestamp"] = f"2026-01-01T00:00:0{index}.000000Z"
        logs.emit(entry)
    messages = lambda **kw: [e["message"] for e in logs.read("svc", **kw)]  # noqa: E731
    assert messages() == ["m0", "m1", "m2", "m3"]
    assert messages(limit=2) == ["m2", "m3"]
    assert messages(revision="r1") == ["m0", "m2"]
    assert messages(min_severity="WARNING") == ["m1", "m2"]
    assert messages(since="2026-01-01T00:00:02.000000Z") == ["m2", "m3"]
    assert messages(after="2026-01-01T00:00:02.000000Z") == ["m3"]
    with pytest.raises(InvalidSpec, match="unknown severity"):
        logs.read("svc", min_severity="LOUD")


def test_storage_is_bounded_by_size(tmp_path: Path) -> None:
    logs = LogStore(tmp_path, max_bytes=10_000)
    for index in range(1000):
        logs.emit(platform_entry("svc", f"message {index} " + "x" * 50))
        if index % 50 == 0:
            logs.flush()
    logs.flush()
    files = {path.name for path in tmp_path.iterdir()}
    assert "svc.jsonl.1" in files and files <= {"svc.jsonl", "svc.jsonl.1"}
    assert all(path.stat().st_size <= 10_000 + 50 * 250 for path in tmp_path.iterdir())
    newest = logs.read("svc", limit=1)
    assert newest[0]["message"].startswith("message 999 ")
    assert len(logs.recent("svc", 500)) == 200
