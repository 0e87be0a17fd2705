"""`services advise --chart FILE.png`: the ramp's throughput and latency against requests in
flight, with the knee marked (matplotlib, drawn without a display)."""

from __future__ import annotations

from pathlib import Path

from homerun.errors import HomerunError
from homerun.model.inspection import Advice


def write_chart(advice: Advice, path: Path) -> None:
    ramp = advice.ramp
    if ramp is None or not ramp.steps:
        raise HomerunError("--chart draws a ramp's steps: give --ramp (or --path, --duration...)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HomerunError(
            "--chart needs matplotlib, which is not installed beside homerun: "
            "pip install matplotlib (or homerun[bench]), or leave --chart out"
        ) from None
    levels = [step.concurrency for step in ramp.steps]
    figure, throughput_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    throughput_axis.plot(
        levels, [step.requests_per_second for step in ramp.steps], "o-", color="tab:blue"
    )
    throughput_axis.set_xlabel("requests in flight on one instance")
    throughput_axis.set_ylabel("requests/s", color="tab:blue")
    latency_axis = throughput_axis.twinx()
    for name, values, style in (
        ("p50", [step.p50_ms for step in ramp.steps], "s--"),
        ("p99", [step.p99_ms for step in ramp.steps], "^--"),
    ):
        points = [(x, y) for x, y in zip(levels, values, strict=True) if y is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            latency_axis.plot(xs, ys, style, label=f"{name} ms", color="tab:red", alpha=0.7)
    latency_axis.set_ylabel("latency (ms)", color="tab:red")
    latency_axis.legend(loc="upper left")
    if ramp.knee is not None:
        throughput_axis.axvline(ramp.knee, color="gray", linestyle=":")
        throughput_axis.annotate(
            f"knee: {ramp.knee}", (ramp.knee, ramp.knee_rps or 0), textcoords="offset points",
            xytext=(6, -14),
        )  # fmt: skip
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_title(
        f"{advice.revision}: --concurrency {advice.concurrency}, "
        f"recommended {advice.recommended_concurrency}"
    )
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as error:
        raise HomerunError(f"--chart: cannot write {path}: {error.strerror}") from None
    finally:
        plt.close(figure)
