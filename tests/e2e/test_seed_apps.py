"""The seed documents' apps, a Django project and httpbin deploy unchanged and answer."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness import APPS, REPO_ROOT, SEEDS, Platform

pytestmark = pytest.mark.e2e


def _code_blocks(seed_glob: str) -> list[tuple[str, str]]:
    seeds = sorted(SEEDS.glob(seed_glob))
    if not seeds:
        pytest.skip(f"seed documents not found under {SEEDS}")
    return re.findall(r"```(\w+)\n(.*?)```", seeds[0].read_text(), re.S)


# SHA-256 of the seed document's two code blocks, taken from ../shared/seeds/000_*.txt, so
# that a checkout without the seed documents (CI's clean clone) still checks the copies.
SEED_SHA256 = {
    "main.py": "c677a0cad15615086497cc45d0cd39f89554226435798ace201d7177722b7384",
    "Dockerfile": "f6a9b6a54af5639f56d1cd71920f12aec5628ab63cee6bc46d7baf0ff38f462f",
}


def test_flask_seed_folder_is_the_seed_byte_for_byte() -> None:
    folders = [APPS / "flask_seed", REPO_ROOT / "examples" / "cloudrun_example"]
    for folder in folders:
        for name, digest in SEED_SHA256.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, folder
    if any(SEEDS.glob("000_*.txt")):
        blocks = dict(_code_blocks("000_*.txt"))
        assert hashlib.sha256(blocks["python"].encode()).hexdigest() == SEED_SHA256["main.py"]
        assert (
            hashlib.sha256(blocks["Dockerfile"].encode()).hexdigest() == SEED_SHA256["Dockerfile"]
        )


def test_fastapi_seed_keeps_the_seed_code() -> None:
    seed = next(body for _, body in _code_blocks("001_*.decoded.txt") if "FastAPI()" in body)
    for folder in (APPS / "fastapi_seed", APPS / "fastapi_procfile"):
        app = (folder / "main.py").read_text()
        # Every seed line is there, in order; only processar_algo (undefined in the seed) is added.
        position = 0
        for line in (line for line in seed.splitlines() if line.strip()):
            position = app.index(line, position) + len(line)


def test_flask_seed_deploys_and_answers(platform: Platform) -> None:
    result = platform.ensure_deployed("helloworld", APPS / "flask_seed")
    # The Dockerfile's `RUN pip install flask gunicorn` ran as the build: its output streams.
    assert "gunicorn" in result.stdout + result.stderr
    response = platform.request("helloworld", "GET", "/")
    assert response.status_code == 200, response.text
    assert response.json() == {"hello": "world"}
    # The Dockerfile's CMD, not a default, serves it.
    assert response.headers.get("server", "").startswith("gunicorn")


def test_fastapi_seed_without_entrypoint_runs_under_uvicorn(platform: Platform) -> None:
    platform.ensure_deployed("fastapi-seed", APPS / "fastapi_seed")
    _check_fastapi_seed(platform, "fastapi-seed")


def test_fastapi_seed_with_procfile(platform: Platform) -> None:
    platform.ensure_deployed("fastapi-procfile", APPS / "fastapi_procfile")
    _check_fastapi_seed(platform, "fastapi-procfile")


def _check_fastapi_seed(platform: Platform, service: str) -> None:
    with platform.client(service) as client:
        users = client.get("/usuarios")
        assert users.status_code == 200, users.text
        assert users.json() == {"usuarios": ["Usuário 1", "Usuário 2"]}
        # An ASGI app under gunicorn's sync workers would not answer at all; under uvicorn it
        # says so in every response.
        assert users.headers.get("server") == "uvicorn"

        started = time.monotonic()
        products = client.get("/produtos")
        elapsed = time.monotonic() - started
        assert products.status_code == 200, products.text
        assert products.json() == {"produtos": ["Produto 1", "Produto 2"]}
        assert 0.9 <= elapsed < 5, elapsed

    # The seed's point: sync endpoints run in the thread pool, so four sleeps of 1 s overlap
    # (the default concurrency of 80 lets all four reach the one instance at once).
    def get_products(_: int) -> int:
        return platform.request(service, "GET", "/produtos").status_code

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(get_products, range(4)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 4
    assert elapsed < 3.5, f"4 concurrent /produtos took {elapsed:.2f}s: not served concurrently"


@pytest.fixture(scope="session")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project exactly as `django-admin startproject mysite` makes it, plus requirements."""
    folder = tmp_path_factory.mktemp("django") / "mysite"
    folder.mkdir()
    django_admin = Path(sys.executable).with_name("django-admin")
    command = [str(django_admin)] if django_admin.exists() else [sys.executable, "-m", "django"]
    subprocess.run([*command, "startproject", "mysite", str(folder)], check=True, timeout=60)
    (folder / "requirements.txt").write_text("django\ngunicorn\n")
    return folder


def test_django_startproject_deploys_and_answers(platform: Platform, django_project: Path) -> None:
    platform.ensure_deployed("mysite", django_project)
    response = platform.request("mysite", "GET", "/")
    # DEBUG=True with empty ALLOWED_HOSTS accepts `.localhost`: the Host header arrived intact.
    assert response.status_code == 200, response.text[:2000]
    assert "The install worked successfully" in response.text
    assert response.headers.get("server", "").startswith("gunicorn")


def test_httpbin_from_pypi_deploys_and_answers(platform: Platform, httpbin: str) -> None:
    response = platform.request(httpbin, "GET", "/status/418")
    assert response.status_code == 418
    assert "teapot" in response.text
