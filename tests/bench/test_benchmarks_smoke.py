"""The benchmarks in bench/ still run: each for a second or two against real servers (a
homerun daemon, the app direct, nginx when installed), writing a JSON with figures that
bench/run_all.py can summarize. Not a measurement, so the figures are only checked to exist;
nothing is installed with apt-get (--no-install), so a machine without wrk or nginx takes the
benchmarks' fallbacks (the Python load generator, no reference proxy)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench"
# A first run on a machine also makes the apps' virtualenvs in bench/results/tmp (pip).
TIMEOUT = 240


def run(script: str, output: Path, *flags: str) -> dict[str, Any]:
    """The benchmark's JSON; on a timeout it gets SIGTERM, on which it stops the daemons and
    servers it started (a SIGKILL would leave them running)."""
    command = [sys.executable, str(BENCH / script), *flags, "--output", str(output)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        printed, _ = process.communicate(timeout=60)
        pytest.fail(f"{script} took over {TIMEOUT} s:\n{printed[-4000:]}")
    assert process.returncode == 0, f"{script} failed:\n{printed[-4000:]}"
    return json.loads(output.read_text())


def summary_rows(result: Path, benchmark: str) -> list[list[str]]:
    """The rows run_all.py writes for this one result: goal, homerun, reference, ratio, target,
    met."""
    summary = result.with_suffix(".md")
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--summarize", str(result)]
        + ["--output", str(summary)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in summary.read_text().splitlines()
        if line.startswith(f"| {benchmark}")
    ]
    assert rows, summary.read_text()
    for row in rows:
        assert row[-1] in ("yes", "**no**", "n/a"), row
    return rows


@pytest.mark.parametrize(
    "flags",
    [
        # The Python load generator, whether or not wrk is installed.
        ["--apps", "flask", "--tool", "python", "--no-telemetry-off", "--router-alone"],
        ["--apps", "fastapi", "--tool", "auto"],
    ],
    ids=["flask-python", "fastapi-auto"],
)
def test_proxy(tmp_path: Path, flags: list[str]) -> None:
    load = ["--duration", "1", "--warmup", "0", "--rounds", "1", "--connections", "4"]
    record = run("proxy.py", tmp_path / "proxy.json", *load, "--no-install", *flags)
    (app,) = record["apps"]
    assert app["app"] == flags[1]
    # homerun runs the folder with the command the direct target is started with.
    assert app["homerun_entrypoint"][-1] == app["command"]
    (measured,) = app["loads"]
    references = {"nginx", "nginx, access log"} if record["nginx"] else set()
    expected = {"direct", "homerun"} | references
    expected |= set() if "--no-telemetry-off" in flags else {"homerun, telemetry off"}
    expected |= {"homerun's router alone"} if "--router-alone" in flags else set()
    assert set(measured["summary"]) == expected
    for target, rounds in measured["rounds"].items():
        assert rounds[0]["requests"] > 0, target
        assert measured["summary"][target]["requests_per_second"] > 0, target
    # The Python proxies (nginx's CPU in a second of load can be under the clock's tick).
    for target in expected & {"homerun", "homerun's router alone"}:
        figures = measured["summary"][target]
        assert figures["cpu_ms"] > 0, target
        assert figures["user_ms"] + figures["system_ms"] > 0, target
    summary_rows(tmp_path / "proxy.json", "proxy")


def test_coldstart(tmp_path: Path) -> None:
    flags = ["--runs", "2", "--first-runs", "1", "--instances", "1"]
    record = run("coldstart.py", tmp_path / "coldstart.json", *flags)
    assert [app["mode"][0] for app in record["apps"]] == ["zygote", "zygote"]
    for app in record["apps"]:
        for kind in ("spawn", "zygote", "zygote_first"):
            assert app["summary"][kind]["median_ms"] > 0, (app["app"], kind)
    assert len(summary_rows(tmp_path / "coldstart.json", "coldstart")) == 2


def test_autoscale(tmp_path: Path) -> None:
    flags = ["--duration", "2", "--concurrency", "80", "--no-direct", "--no-spawn"]
    record = run("autoscale.py", tmp_path / "autoscale.json", *flags)
    (result,) = record["results"]
    assert result["zygote"] is True
    assert result["requests"] > result["errors"]
    assert result["peak_instances"] >= 1
    assert (tmp_path / "autoscale.csv").exists() and (tmp_path / "autoscale.png").exists()
    rows = summary_rows(tmp_path / "autoscale.json", "autoscale")
    assert any("not measured" in row[1] for row in rows)  # no spawned run here


def test_soak(tmp_path: Path) -> None:
    """Twenty seconds with a step every 3 s: a deploy, an instance kill and a split happen;
    the run exits 0 only if every failed request followed a kill and every step worked."""
    flags = ["--minutes", "0.35", "--step-seconds", "3", "--sample-seconds", "2", "--clients", "3"]
    record = run("soak.py", tmp_path / "soak.json", *flags)
    summary = record["summary"]
    assert summary["requests"] > 100
    assert summary["failed_otherwise"] == 0
    assert {"deploy", "kill", "split"} <= set(summary["steps"]), summary["steps"]
    assert summary["instance_kills"] >= 1
    assert len(record["samples"]) >= 5
    assert all(sample["daemon_rss_mib"] > 0 for sample in record["samples"])
    assert all(sample["daemon_open_files"] > 0 for sample in record["samples"])


def test_inspector_benchmark_runs(tmp_path: Path) -> None:
    result = run(
        "inspector.py",
        tmp_path / "inspector.json",
        "--connections",
        "4",
        "--duration",
        "2",
        "--rounds",
        "1",
        "--tool",
        "python",
        "--no-install",
    )
    for kind in ("async", "sync"):
        assert result["summary"][kind]["on_rps"] > 0 and result["summary"][kind]["off_rps"] > 0
    assert result["advisor_ms"] > 0


def test_router_alone(tmp_path: Path) -> None:
    """The router in a process of its own in front of the seed app (and of nginx answering
    itself, when nginx is installed), beside nginx in front of the same."""
    flags = ["--app", "fastapi", "--duration", "1", "--rounds", "1", "--no-install"]
    record = run("router_alone.py", tmp_path / "alone.json", *flags)
    medians = record["medians"]
    assert "the fastapi seed app / homerun's router alone" in medians, medians
    for pair, figures in medians.items():
        assert figures["requests_per_second"] > 0, pair
        assert figures["user_us"] + figures["system_us"] > 0, pair
