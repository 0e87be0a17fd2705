"""Shared pieces of the builder tests: example folders, the seed's FastAPI code, an output sink."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
SEED_FLASK = EXAMPLES / "cloudrun_example"

# The FastAPI code of seed 001 as a folder would hold it (no requirements.txt, no Procfile).
SEED_FASTAPI_MAIN = """\
from fastapi import FastAPI
from time import sleep

app = FastAPI()

# Endpoint síncrono (executado no ThreadPool)
@app.get("/produtos")
def listar_produtos():
    sleep(1)  # Simulando operação bloqueante
    return {"produtos": ["Produto 1", "Produto 2"]}

# Endpoint assíncrono (executado no Event Loop)
@app.get("/usuarios")
async def listar_usuarios():
    await processar_algo()
    return {"usuarios": ["Usuário 1", "Usuário 2"]}
"""


class Output:
    """Collects build output lines, as the daemon's build log would."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under root and return root."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
