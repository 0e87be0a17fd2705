"""Traffic: --no-traffic and tags, splits by percent, rollbacks under load without a lost
request, and the revision commands around them (describe, delete, retention)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import APPS, Platform, describe, running_platform

pytestmark = pytest.mark.e2e

STREAMING = APPS / "streaming"
SPLIT_REQUESTS = 2000
SPLIT_TOLERANCE = 3  # percentage points


def summary(platform: Platform, service: str) -> dict[str, Any]:
    result = platform.run("services", "describe", service, "--format", "summary-json", check=True)
    described: dict[str, Any] = json.loads(result.stdout)
    return described


def traffic_of(platform: Platform, service: str) -> list[tuple[str, int, str | None]]:
    return [(t["revision"], t["percent"], t["tag"]) for t in summary(platform, service)["traffic"]]


def revision_names(platform: Platform, service: str) -> list[str]:
    return [revision["name"] for revision in summary(platform, service)["revisions"]]


def revisions_seen(platform: Platform, host: str, count: int) -> Counter[str]:
    """K_REVISION of `count` requests to `host` (a service, or TAG---SERVICE), 8 at a time."""

    def batch(size: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        with platform.client(host) as client:
            for _ in range(size):
                response = client.get("/env")
                assert response.status_code == 200, response.text
                seen[response.json()["K_REVISION"]] += 1
        return seen

    workers = 8
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(batch, [count // workers + (i < count % workers) for i in range(workers)])
    total: Counter[str] = Counter()
    for part in parts:
        total += part
    platform.revisions_seen |= set(total)
    return total


def test_no_traffic_tags_split_and_refusals(platform: Platform) -> None:
    service = "canary"
    platform.deploy_ok(service, STREAMING, "--set-env-vars", "GREETING=v1")
    first = platform.env_of(service)["K_REVISION"]

    # --no-traffic pins the split; --tag gives the new revision its own URL.
    result = platform.deploy(
        service, STREAMING, "--update-env-vars", "GREETING=v2", "--no-traffic", "--tag", "green"
    )
    assert result.returncode == 0, describe(result)
    assert "serving 0 percent of traffic" in result.stdout
    tag_url = f"http://green---{service}.localhost:{platform.port}"
    assert f"The revision can be reached directly at {tag_url}" in result.stdout
    green = platform.env_of(f"green---{service}")
    second = green["K_REVISION"]
    assert second != first and green["GREETING"] == "v2"
    assert revisions_seen(platform, service, 50) == {first: 50}

    # Refused, and nothing changes: over 100 %, an unknown revision, an unknown tag, a
    # revision that serves traffic or carries a tag.
    before = traffic_of(platform, service)
    for flags, message in [
        (["--to-revisions", f"{first}=60,{second}=50"], "more than 100%"),
        (["--to-revisions", f"{service}-00009-zzz=100"], "is not a revision of canary"),
        (["--to-tags", "blue=10"], "no revision of canary is tagged 'blue'"),
        (["--remove-tags", "blue"], "has no tag 'blue'"),
    ]:
        refused = platform.run("services", "update-traffic", service, *flags)
        assert refused.returncode != 0 and message in refused.stderr, describe(refused)
    tagged = (second, "carries the tag(s) green")
    for revision, message in [(first, "serves 100%"), tagged]:
        refused = platform.run("revisions", "delete", revision)
        assert refused.returncode != 0 and message in refused.stderr, describe(refused)
    assert traffic_of(platform, service) == before

    # 30 % by tag: over 2000 requests each revision's share is within 3 points.
    result = platform.run("services", "update-traffic", service, "--to-tags", "green=30")
    assert result.returncode == 0, describe(result)
    seen = revisions_seen(platform, service, SPLIT_REQUESTS)
    assert set(seen) == {first, second}
    for revision, expected in ((first, 70), (second, 30)):
        share = 100 * seen[revision] / SPLIT_REQUESTS
        assert abs(share - expected) <= SPLIT_TOLERANCE, (revision, share, seen)

    # All to LATEST (the tagged revision), and the first revision keeps a tag at 0 %: it is
    # not retired for good; its tag URL starts it again (from zero) and reaches it.
    result = platform.run(
        "services", "update-traffic", service, "--to-latest", "--update-tags", f"old={first}"
    )
    assert result.returncode == 0, describe(result)
    assert revisions_seen(platform, service, 20) == {second: 20}
    assert platform.env_of(f"old---{service}")["K_REVISION"] == first
    old_url = f"http://old---{service}.localhost:{platform.port}"
    yaml_text = platform.run("services", "describe", service, "--format", "yaml", check=True)
    assert f"url: {old_url}" in yaml_text.stdout

    # Untagged and idle, the first revision can go, its artifact with it.
    platform.run("services", "update-traffic", service, "--remove-tags", "old", check=True)
    result = platform.run("revisions", "delete", first)
    assert result.returncode == 0, describe(result)
    assert first not in revision_names(platform, service)
    assert not (platform.home / "revisions" / first).exists()


def test_zero_downtime_rollout_split_and_rollback(platform: Platform) -> None:
    """24 clients in a loop while a new revision deploys, traffic splits 50/50, and all of it
    goes back to the old revision: every request answered, none with a 5xx."""
    service = "steady"
    platform.deploy_ok(service, STREAMING, "--set-env-vars", "GREETING=old")
    old = platform.env_of(service)["K_REVISION"]

    stop = threading.Event()
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    seen: list[tuple[float, str]] = []  # (sent at, revision that answered)

    def client_loop(number: int) -> None:
        path = "/env" if number % 2 else "/slow?seconds=0.05"
        with platform.client(service, timeout=30) as client:
            for _ in range(100_000):  # bounded; stop ends it long before
                if stop.is_set():
                    return
                # When the request was sent: one routed before a change may be answered after
                # the command that made it has returned.
                sent = time.monotonic()
                try:
                    response = client.get(path)
                except httpx.HTTPError as error:
                    with lock:
                        failures.append(f"{type(error).__name__}: {error}")
                    continue
                with lock:
                    statuses[response.status_code] += 1
                if path == "/env" and response.status_code == 200:
                    with lock:
                        seen.append((sent, response.json()["K_REVISION"]))

    def wait_for(revisions: set[str], since: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                recent = {revision for at, revision in seen if at > since}
            if revisions <= recent:
                return
            time.sleep(0.05)
        pytest.fail(f"{revisions} not all seen since the change; saw {recent}")

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    try:
        wait_for({old}, 0)
        deployed = platform.deploy(service, STREAMING, "--update-env-vars", "GREETING=new")
        assert deployed.returncode == 0, describe(deployed)
        new = platform.env_of(service)["K_REVISION"]
        assert new != old
        wait_for({new}, time.monotonic())

        result = platform.run(
            "services", "update-traffic", service, "--to-revisions", f"{old}=50,{new}=50"
        )
        assert result.returncode == 0, describe(result)
        wait_for({old, new}, time.monotonic())

        result = platform.run("services", "update-traffic", service, "--to-revisions", f"{old}=100")
        assert result.returncode == 0, describe(result)
        rolled_back = time.monotonic()  # the command has returned: the new table is in place
        wait_for({old}, rolled_back)
        time.sleep(1.0)  # load keeps coming while the new revision drains and stops
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    platform.revisions_seen |= {old, new}

    assert not failures, failures[:5]
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 500, statuses
    with lock:
        after = [revision for at, revision in seen if at > rolled_back]
    assert after and set(after) == {old}


def test_env_updates_and_secrets(platform: Platform, tmp_path: Path) -> None:
    service = "configured"
    value = "s3cr3t-greeting-7f1e"
    secret_file = tmp_path / "greeting.txt"
    secret_file.write_text(value)
    created = platform.run("secrets", "create", "greeting", "--data-file", str(secret_file))
    assert created.returncode == 0, describe(created)
    stored = platform.home / "secrets" / "greeting" / "1"
    assert stored.stat().st_mode & 0o777 == 0o600

    platform.deploy_ok(
        service,
        STREAMING,
        "--set-env-vars",
        "DSN=db://u@h/x",
        "--set-secrets",
        "GREETING=greeting:latest",
    )
    env = platform.env_of(service)
    assert env["GREETING"] == value and env["DSN"] == "db://u@h/x"
    first = env["K_REVISION"]

    # The value appears in no description, listing or log.
    outputs = [
        platform.run("services", "describe", service, *fmt, check=True).stdout
        for fmt in ([], ["--format", "yaml"], ["--format", "json"], ["--format", "summary-json"])
    ]
    outputs += [
        platform.run("revisions", "describe", first, *fmt, check=True).stdout
        for fmt in ([], ["--format", "yaml"])
    ]
    outputs.append(platform.run("revisions", "list", "--format", "json", check=True).stdout)
    outputs.append(platform.run("secrets", "list", check=True).stdout)
    outputs.append(platform.run("logs", "read", service, "--limit", "500", check=True).stdout)
    for output in outputs:
        assert value not in output
    assert "greeting:latest" in outputs[0]

    # A new version; --update-env-vars starts from the current env and makes a new revision,
    # whose instance reads `latest` when it starts.
    second_file = tmp_path / "greeting2.txt"
    second_file.write_text("second-greeting-value")
    added = platform.run("secrets", "versions", "add", "greeting", "--data-file", str(second_file))
    assert added.returncode == 0, describe(added)
    updated = platform.run("services", "update", service, "--update-env-vars", "EXTRA=1")
    assert updated.returncode == 0, describe(updated)
    env = platform.env_of(service)
    assert env["K_REVISION"] != first
    assert env["GREETING"] == "second-greeting-value" and env["DSN"] == "db://u@h/x"

    # The same settings again: no new revision.
    count = len(revision_names(platform, service))
    again = platform.run("services", "update", service, "--update-env-vars", "EXTRA=1")
    assert again.returncode == 0 and "No change" in again.stdout, describe(again)
    assert len(revision_names(platform, service)) == count

    # Removing, and a YAML env file that replaces every plain variable.
    platform.run("services", "update", service, "--remove-env-vars", "DSN", check=True)
    assert platform.env_of(service)["DSN"] is None
    env_file = tmp_path / "env.yaml"
    env_file.write_text("DSN: 'file://from-yaml'\n")
    platform.run("services", "update", service, "--env-vars-file", str(env_file), check=True)
    env = platform.env_of(service)
    assert env["DSN"] == "file://from-yaml" and env["GREETING"] == "second-greeting-value"

    # A secret in use cannot be deleted; a missing version cannot be deployed.
    refused = platform.run("secrets", "delete", "greeting")
    assert refused.returncode != 0 and "is used by revision" in refused.stderr, describe(refused)
    missing = platform.run("services", "update", service, "--update-secrets", "X=greeting:9")
    assert missing.returncode != 0 and "has no version 9" in missing.stderr, describe(missing)


def test_describe_replace_round_trip(platform: Platform, tmp_path: Path) -> None:
    service = "declared"
    platform.deploy_ok(service, STREAMING, "--set-env-vars", "GREETING=hi")
    first = platform.env_of(service)["K_REVISION"]
    described = platform.run("services", "describe", service, "--format", "yaml", check=True)
    document = tmp_path / "service.yaml"
    document.write_text(described.stdout)

    # Same spec: no new revision, and describe shows the same document.
    result = platform.run("services", "replace", str(document))
    assert result.returncode == 0 and "unchanged" in result.stdout, describe(result)
    again = platform.run("services", "describe", service, "--format", "yaml", check=True)
    assert again.stdout == described.stdout
    assert revision_names(platform, service) == [first]

    # A changed template: a new revision (from the same artifact), serving through LATEST.
    document.write_text(described.stdout.replace("value: hi", "value: hello"))
    result = platform.run("services", "replace", str(document))
    assert result.returncode == 0, describe(result)
    env = platform.env_of(service)
    second = env["K_REVISION"]
    assert second != first and env["GREETING"] == "hello"

    # A traffic block: 50/50 with a tag on the first revision.
    changed = platform.run("services", "describe", service, "--format", "yaml", check=True).stdout
    traffic = (
        "  traffic:\n"
        f"  - revisionName: {first}\n    percent: 50\n    tag: first\n"
        "  - latestRevision: true\n    percent: 50\n"
    )
    head, _, rest = changed.partition("  traffic:\n")
    document.write_text(head + traffic + rest[rest.index("status:") :])
    result = platform.run("services", "replace", str(document))
    assert result.returncode == 0 and "unchanged" in result.stdout, describe(result)
    assert platform.env_of(f"first---{service}")["K_REVISION"] == first
    assert set(revisions_seen(platform, service, 100)) == {first, second}

    # describe -> replace -> describe is stable.
    stable = platform.run("services", "describe", service, "--format", "yaml", check=True).stdout
    document.write_text(stable)
    platform.run("services", "replace", str(document), check=True)
    assert platform.run("services", "describe", service, "--format", "yaml").stdout == stable

    # An invalid document names the field and changes nothing.
    document.write_text(stable.replace("percent: 50\n", "percent: 150\n", 1))
    refused = platform.run("services", "replace", str(document))
    assert refused.returncode != 0, describe(refused)
    assert "spec.traffic[0].percent: must be 0..100, got 150" in refused.stderr
    assert platform.run("services", "describe", service, "--format", "yaml").stdout == stable


def test_retention_collects_old_revisions_and_unused_virtualenvs(tmp_path: Path) -> None:
    """With a retention of one idle revision, older idle revisions go with their artifacts,
    and a virtualenv of this home's own cache goes once no revision uses it."""
    app = tmp_path / "plain"
    app.mkdir()
    (app / "main.py").write_text(
        "import http.server, os\n"
        "class Handler(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = os.environ['K_REVISION'].encode()\n"
        "        self.send_response(200)\n"
        "        self.send_header('Content-Length', str(len(body)))\n"
        "        self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), Handler)"
        ".serve_forever()\n"
    )
    home = tmp_path / "home"
    cache = home / "venvs"  # the home's own cache: only then are virtualenvs collected
    config = {"revision-retention": 1, "stop-grace-seconds": 3}
    with running_platform(home, cache, config) as own:
        own.deploy_ok("kept", app, "--command", "python,main.py")
        first_venv = {path.name for path in cache.iterdir() if path.is_dir()}
        assert len(first_venv) == 1
        # Dependencies change (a requirements file): another virtualenv.
        (app / "requirements.txt").write_text("# nothing to install\n")
        own.deploy_ok("kept", app)
        # Two revisions from the same artifact, without a build.
        for value in ("1", "2"):
            result = own.run("services", "update", "kept", "--update-env-vars", f"N={value}")
            assert result.returncode == 0 and "no rebuild" in result.stdout, describe(result)
        names = revision_names(own, "kept")
        assert len(names) == 2, names  # the serving one and one idle one
        assert sorted(path.name for path in (home / "revisions").iterdir()) == sorted(names)
        own.revisions_seen |= set(names)
        deadline = time.monotonic() + 15
        while first_venv & {path.name for path in cache.iterdir()}:
            assert time.monotonic() < deadline, "the unused virtualenv is still there"
            time.sleep(0.1)
        assert own.request("kept", "GET", "/").text == names[0]
