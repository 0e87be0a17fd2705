"""The code's shape as docs/design.md promises it: modules a reader can hold in mind, and typed
data at module boundaries."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "homerun"
MAX_MODULE_LINES = 750
# Public signatures (parameters or result) that still hold dict[str, Any]: mostly Knative and
# OpenAPI documents, whose shape is a schema's, not homerun's. New ones need a type instead.
MAX_UNTYPED_SIGNATURES = 29
# The zygote's programs run on the app's own Python (3.6 and later), beside homerun, not in it.
ZYGOTE_PROGRAMS = PACKAGE / "runtime" / "_zygote"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_much_over_700_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in modules()
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these by concept (docs/design.md): {long}"


def untyped_signatures(source: str) -> list[str]:
    """Public functions and methods (of public classes) whose annotations hold dict[str, Any]."""
    found: list[str] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                private = child.name.startswith("_") and not child.name.endswith("__")
                arguments = child.args
                annotations = [
                    argument.annotation
                    for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)
                    if argument.annotation is not None
                ]
                if child.returns is not None:
                    annotations.append(child.returns)
                if not private and any("dict[str, Any]" in ast.unparse(a) for a in annotations):
                    found.append(f"{prefix}{child.name}")

    visit(ast.parse(source), "")
    return found


def test_the_counter_sees_what_it_should() -> None:
    source = (
        "def a(x: dict[str, Any]) -> None: ...\n"
        "def _b(x: dict[str, Any]) -> None: ...\n"
        "class C:\n"
        "    def d(self) -> list[dict[str, Any]]: ...\n"
        "    def e(self, x: dict[str, int]) -> None: ...\n"
        "    async def __call__(self, *, y: dict[str, Any]) -> None: ...\n"
        "class _D:\n"
        "    def f(self) -> dict[str, Any]: ...\n"
    )
    assert untyped_signatures(source) == ["a", "C.d", "C.__call__"]


def test_data_crossing_module_boundaries_is_mostly_typed() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in modules()
        if not path.is_relative_to(ZYGOTE_PROGRAMS)
        for name in untyped_signatures(path.read_text())
    ]
    assert len(found) <= MAX_UNTYPED_SIGNATURES, (
        f"{len(found)} public signatures hold dict[str, Any] (at most "
        f"{MAX_UNTYPED_SIGNATURES}); give the new ones a type:\n" + "\n".join(found)
    )
