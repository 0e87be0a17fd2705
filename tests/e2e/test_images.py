"""Images without a container engine, through the CLI: the first seed's two commands word for
word with `homerun` for `gcloud`, the image store, and the bad inputs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import APPS, HOMERUN, SEEDS, Platform, describe, running_platform

pytestmark = pytest.mark.e2e

# The seed's deploy commands (seeds/000_*.txt), for a checkout without the seed documents.
SEED_COMMANDS = [
    "gcloud builds submit --tag=gcr.io/<project>/helloworld",
    "gcloud run deploy helloworld --image=gcr.io/<project>/helloworld",
]
PROJECT = "my-project"


def seed_commands() -> list[str]:
    seeds = sorted(SEEDS.glob("000_*.txt"))
    if not seeds:
        return SEED_COMMANDS
    blocks = re.findall(r"```bash\n(.*?)```", seeds[0].read_text(), re.S)
    commands = [line.strip() for line in blocks[0].splitlines() if line.strip()]
    assert commands == SEED_COMMANDS  # the copy above is the seed's
    return commands


def run_in(
    platform: Platform, folder: Path, command: str, timeout: float = 270.0
) -> subprocess.CompletedProcess[str]:
    """A seed line as a user types it in the app's folder, `homerun` for `gcloud`."""
    words = shlex.split(command.replace("<project>", PROJECT))
    assert words[0] == "gcloud"
    return subprocess.run(
        [*HOMERUN, *words[1:]],
        cwd=folder,
        env=platform.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def token(platform: Platform) -> str:
    result = platform.run("auth", "print-identity-token", check=True)
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def own_platform(tmp_path: Path, venv_cache: Path) -> Iterator[Platform]:
    """A daemon of its own without a container engine, as on a machine without podman."""
    config = {"stop-grace-seconds": 3, "container-engine": "none"}
    with running_platform(tmp_path / "home", venv_cache, config) as own:
        yield own


def test_the_seeds_two_commands_word_for_word(own_platform: Platform, tmp_path: Path) -> None:
    app = tmp_path / "cloudrun_example"
    shutil.copytree(APPS / "flask_seed", app)
    submit, deploy = seed_commands()

    built = run_in(own_platform, app, submit)
    assert built.returncode == 0, describe(built)
    assert "gunicorn" in built.stdout  # the Dockerfile's RUN pip install ran as the build
    assert "Image: gcr.io/my-project/helloworld:latest" in built.stdout
    digest = built.stdout.strip().splitlines()[-1].removeprefix("Digest: ")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), built.stdout

    deployed = run_in(own_platform, app, deploy)
    assert deployed.returncode == 0, describe(deployed)
    assert deployed.stdout.strip().splitlines()[-1] == (
        f"Service URL: {own_platform.url('helloworld')}"
    )
    assert f"gcr.io/my-project/helloworld@{digest}" in deployed.stdout
    # No terminal answered gcloud's question, so the service is private, as on Cloud Run.
    assert own_platform.request("helloworld", "GET", "/").status_code == 401
    headers = {"Authorization": f"Bearer {token(own_platform)}"}
    response = own_platform.request("helloworld", "GET", "/", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"hello": "world"}
    assert response.headers.get("server", "").startswith("gunicorn")

    described = own_platform.describe_service("helloworld")
    (revision,) = described["revisions"]
    assert revision["image"] == f"gcr.io/my-project/helloworld@{digest}"
    images = own_platform.run("images", "list", check=True).stdout
    assert "gcr.io/my-project/helloworld:latest" in images and digest[:19] in images
    builds = own_platform.run("builds", "list", check=True).stdout
    assert "SUCCESS" in builds and "gcr.io/my-project/helloworld:latest" in builds

    # Bad inputs: the revision serving now keeps serving through each.
    missing = own_platform.run("run", "deploy", "helloworld", "--image=gcr.io/my-project/hello")
    assert missing.returncode == 1
    assert "there is no image gcr.io/my-project/hello:latest" in missing.stderr
    assert "homerun builds submit SOURCE --tag gcr.io/my-project/hello" in missing.stderr
    unparsable = own_platform.run("deploy", "helloworld", "--image", "gcr.io/<project>/helloworld")
    assert unparsable.returncode == 1
    assert "is not an image name" in unparsable.stderr
    assert "gcr.io/PROJECT/NAME" in unparsable.stderr
    lines = (app / "Dockerfile").read_text().splitlines()
    (app / "Dockerfile").write_text("\n".join([*lines, "RUN apt-get install -y ffmpeg"]) + "\n")
    refused = run_in(own_platform, app, submit)
    assert refused.returncode == 1
    assert f"Dockerfile:{len(lines) + 1}: `RUN apt-get" in refused.stderr
    assert "install podman" in refused.stderr and "container-engine: auto" in refused.stderr
    response = own_platform.request("helloworld", "GET", "/", headers=headers)
    assert response.status_code == 200
    assert [r["name"] for r in own_platform.describe_service("helloworld")["revisions"]] == [
        revision["name"]
    ]
    failed = own_platform.run("builds", "list", check=True).stdout.splitlines()[1]
    assert failed.endswith("FAILURE")

    # Deleting the image leaves its revision running (it has its own copy).
    deleted = own_platform.run("images", "delete", "gcr.io/my-project/helloworld", "-q")
    assert deleted.returncode == 0, describe(deleted)
    assert "No images" in own_platform.run("images", "list", check=True).stdout
    response = own_platform.request("helloworld", "GET", "/", headers=headers)
    assert response.status_code == 200
