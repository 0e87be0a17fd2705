"""Tests listen on host loopback ports that no NAT rule redirects.

A container engine can leave a DNAT rule for a loopback port behind (podman issue 27516,
runtime/nat.py); a server the kernel then puts on that port by a bare port 0 is never reached,
and its test fails with a connect timeout now and then. `fakes.free_port()` and
`fakes.loopback_listener()` skip such ports; this scan keeps bare port 0 out of the tests
(a revision's own network namespace, `NetNamespace.listen`, has no such rules)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LOOPBACK = {"127.0.0.1", "::1", "localhost", ""}
# fakes.py is where the checked ports come from; apps/ are deployed apps, run in instances.
EXEMPT = {TESTS / "fakes.py", TESTS / "test_listeners.py"}


def bare_port_zero(source: str) -> list[int]:
    """Lines of calls given a loopback host and port 0, as two arguments or one tuple."""
    lines: list[int] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "listen":
            continue  # NetNamespace.listen: inside a namespace of the test's own
        for group in [node.args, *(arg.elts for arg in node.args if isinstance(arg, ast.Tuple))]:
            values = [arg.value if isinstance(arg, ast.Constant) else None for arg in group]
            if any(
                host in LOOPBACK and port == 0 and type(port) is int
                for host, port in zip(values, values[1:], strict=False)
            ):
                lines.append(node.lineno)
    return sorted(set(lines))


def test_the_scan_finds_each_form() -> None:
    source = (
        'server = await asyncio.start_server(handle, "127.0.0.1", 0)\n'
        'await router.start_tls("127.0.0.1", 0, context)\n'
        'socket.create_server(("127.0.0.1", 0))\n'
        'namespace.listen("127.0.0.1", 0)\n'
        'await router.start("127.0.0.1", free_port())\n'
    )
    assert bare_port_zero(source) == [1, 2, 3]


def test_no_test_listens_on_a_bare_port_zero() -> None:
    found = {
        f"{path.relative_to(TESTS)}:{line}"
        for path in TESTS.rglob("*.py")
        if path not in EXEMPT and TESTS / "apps" not in path.parents
        for line in bare_port_zero(path.read_text())
    }
    assert not found, f"use fakes.free_port() or fakes.loopback_listener() at {sorted(found)}"
