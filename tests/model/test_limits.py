"""--memory and --cpu as numbers, with Cloud Run's defaults."""

import pytest

from homerun.model.limits import DEFAULT_LIMITS, Limits, MiB, cpu_millis, limits, memory_bytes


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("512Mi", 512 * MiB),
        ("2Gi", 2 * 1024 * MiB),
        ("1.5Gi", 1536 * MiB),
        ("128974848", 128974848),
        ("1G", 10**9),
        ("500M", 500 * 10**6),
        ("64Ki", 64 * 1024),
    ],
)
def test_memory_quantities_read_as_kubernetes_reads_them(quantity: str, expected: int) -> None:
    assert memory_bytes(quantity) == expected


@pytest.mark.parametrize(("quantity", "expected"), [("1", 1000), ("0.5", 500), ("250m", 250)])
def test_cpu_quantities_are_thousandths_of_a_core(quantity: str, expected: int) -> None:
    assert cpu_millis(quantity) == expected


def test_cloud_runs_defaults_apply_where_nothing_was_asked() -> None:
    assert DEFAULT_LIMITS == Limits(memory_bytes=512 * MiB, cpu_millis=1000)
    assert limits("2", None) == Limits(memory_bytes=512 * MiB, cpu_millis=2000)
    assert limits(None, "1Gi").memory_mib == 1024
