"""homerun's dependency rules (docs/design.md, "Layers"), checked on the source."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "homerun"

# Lower layers never import higher ones; within a layer, parts don't import each other unless
# listed in ALLOWED_SIDEWAYS. A part is a subpackage or a top-level module.
LAYERS: list[set[str]] = [
    {"errors", "procfs", "readable", "shellwords"},  # leaves
    {"model"},  # nouns without I/O
    {"spec", "traffic"},  # what users ask for, validated
    {"knative", "build", "runtime", "secret_store", "store_db", "progress", "client"},
    {"routing"},  # the data plane
    {"access"},
    {"store", "pool_store", "mapping_store", "scheduler_store"},
    {"observe"},
    {"scaling"},
    {"config"},  # settings, autoscaler's included
    {"control"},
    {"admin"},
    {"daemon"},  # the one place that wires
    {"cli"},
    {"__main__"},
]


def part_of(module: str) -> str:
    """homerun.routing.proxy -> routing; homerun.store -> store."""
    return module.split(".")[1]


def imports() -> dict[str, set[str]]:
    """part -> the homerun parts its modules import (at run time or for type checking)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        if module == "homerun":
            continue
        source = part_of(module) if "." in module else module
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
                if node.module == "homerun":
                    names = [f"homerun.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("homerun."):
                    target = part_of(name)
                    if target != source:
                        graph[source].add(target)
    return graph


def layer_of(part: str) -> int:
    for index, layer in enumerate(LAYERS):
        if part in layer:
            return index
    raise AssertionError(f"homerun/{part} is in no layer: add it to LAYERS and docs/design.md")


def test_every_import_goes_down_the_layers() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(imports().items())
        for target in sorted(targets)
        if layer_of(target) >= layer_of(source)
    ]
    assert upward == []


def test_the_model_imports_only_errors() -> None:
    assert imports().get("model", set()) <= {"errors"}
