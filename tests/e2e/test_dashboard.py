"""The dashboard in a real browser (Debian's Chromium driven by Playwright).

Two levels: the page served by `create_dashboard_app` over a fixed, rich overview on a real
uvicorn (what the page shows, the window toggle, live refresh), then the page of a real daemon
while real traffic flows through its router. Chromium comes from `scripts/install-browser`;
Playwright never downloads a browser of its own here.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fakes import loopback_listener

from homerun.admin.dashboard import LOOPBACK_HOSTS, create_dashboard_app

from .harness import APPS, REPO_ROOT, Platform, free_port, running_platform


def wait_until(page: Any, expression: str, arg: Any = None, timeout: float = 30.0) -> None:
    """Until a JavaScript function of `arg` returns true in the page.

    Playwright's wait_for_function re-evaluates its predicate with eval() inside the page,
    which the dashboard's Content-Security-Policy (no 'unsafe-eval') forbids once polling
    starts; page.evaluate runs through the debugger protocol, which the policy does not
    govern, so the page is tested under the policy it is served with.
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout:g} s: {expression}")
        time.sleep(0.05)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO_ROOT / "test-artifacts"
# Wide enough for the four-column chart grid a desktop browser shows.
VIEWPORT = {"width": 1440, "height": 900}
# The page fetches every 2 s; a few refreshes' worth of patience for anything it shows.
PAGE_SECONDS = 15.0
CHARTS = ("rps", "latency", "concurrency", "queue", "instances", "cold-starts", "cpu", "memory")

# A rich overview --------------------------------------------------------------------------------

NOW = 1764111111.5
SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL")
# Markup in a log line must show as text: app output is never trusted as HTML.
HOSTILE_MESSAGE = '<img src="x" data-hostile="1"> is text, not an image'
# hello runs a new revision (2 ready, 1 starting) beside its old one (1 ready, 1 draining).
INSTANCES = [
    ("hello-00002-xyz-a1b2c3", "hello-00002-xyz", "ready"),
    ("hello-00002-xyz-d4e5f6", "hello-00002-xyz", "ready"),
    ("hello-00002-xyz-0718aa", "hello-00002-xyz", "starting"),
    ("hello-00001-abc-99ffee", "hello-00001-abc", "ready"),
    ("hello-00001-abc-12ab34", "hello-00001-abc", "draining"),
]
SAMPLE_READY = 3
# The Ready condition's message of worker, whose only revision failed.
WORKER_FAILED = 'Revision "worker-00001-qqq" failed with message: no answer on $PORT'


def sample_overview(window: int, extra_ready: int = 0) -> dict[str, Any]:
    """A fixed overview in the shape the daemon sends; `extra_ready` moves the ready count."""
    step = 1 if window <= 300 else 10
    count = window // step
    t = [NOW - window + step * (index + 1) for index in range(count)]
    wave = [math.sin(index / 17) for index in range(count)]
    # The first tenth of the window had no requests: no latency there, and no instance yet.
    quiet = count // 10
    ready = [0 if i < quiet else 1 if i < count // 3 else SAMPLE_READY for i in range(count)]
    ready[-1] += extra_ready
    series: dict[str, Any] = {
        "t": t,
        "rps_2xx": [0.0 if i < quiet else round(24 + 9 * w, 2) for i, w in enumerate(wave)],
        "rps_3xx": [0.0 if i < quiet else 1.5 for i in range(count)],
        "rps_4xx": [0.0 if i < quiet else round(2 + 2 * abs(w), 2) for i, w in enumerate(wave)],
        "rps_5xx": [1.2 if i % 40 == 39 else 0.0 for i in range(count)],
        "p50_ms": [None if i < quiet else round(4 + w, 2) for i, w in enumerate(wave)],
        "p95_ms": [None if i < quiet else round(14 + 4 * w, 2) for i, w in enumerate(wave)],
        "p99_ms": [None if i < quiet else round(38 + 12 * w, 2) for i, w in enumerate(wave)],
        "starting": [1 if i in (quiet, count // 3, count - 5) else 0 for i in range(count)],
        "ready": ready,
        "draining": [1 if i >= count - 20 else 0 for i in range(count)],
        "in_flight": [0 if i < quiet else round(30 + 25 * w) for i, w in enumerate(wave)],
        "capacity": [80 * r for r in ready],
        "queue": [max(0, round(12 * w - 8)) if i >= quiet else 0 for i, w in enumerate(wave)],
        "cold_starts": [1 if i in (quiet, count // 3) else 0 for i in range(count)],
        "instance_cpu_percent": {},
        "instance_rss_mb": {},
    }
    for number, (name, _, _) in enumerate(INSTANCES):
        born = quiet + number * count // 8
        series["instance_cpu_percent"][name] = [
            None if i < born else round(8 + 6 * number + 5 * wave[i], 1) for i in range(count)
        ]
        series["instance_rss_mb"][name] = [
            None if i < born else round(48 + 9 * number + min(i - born, 40) * 0.2, 1)
            for i in range(count)
        ]
    hello = {
        "name": "hello",
        "url": "http://hello.localhost:8080",
        "ready": True,
        "readiness": {"status": "True", "reason": None, "message": None},
        "traffic": [
            {"revision": "hello-00002-xyz", "percent": 90, "tag": None},
            {"revision": "hello-00001-abc", "percent": 10, "tag": "stable"},
        ],
        "revisions": [
            {
                "name": "hello-00002-xyz",
                "status": "ready",
                "concurrency": 80,
                "instances": {"starting": 1, "ready": 2 + extra_ready, "draining": 0},
                "in_flight": 41,
                "queue_length": 3,
                "last_decision": {
                    "seconds_ago": 1.2,
                    "desired": 3,
                    "mode": "panic",
                    "reason": "panic: 41 in flight over 6 s is 2.6x the 2 ready instances' target",
                },
            },
            {
                "name": "hello-00001-abc",
                "status": "ready",
                "concurrency": 80,
                "instances": {"starting": 0, "ready": 1, "draining": 1},
                "in_flight": 2,
                "queue_length": 0,
                "last_decision": {
                    "seconds_ago": 30.5,
                    "desired": 1,
                    "mode": "stable",
                    "reason": "stable: 1.8 in flight averaged over 60 s needs 1 instance",
                },
            },
        ],
        "instances": [
            {
                "name": name,
                "revision": revision,
                "state": state,
                "pid": 4000 + number,
                "in_flight": 0 if state != "ready" else 12 + number,
                "capacity": 80,
                "cpu_percent": None if state == "starting" else 8.0 + 6 * number,
                "rss_bytes": None if state == "starting" else (48 + 9 * number) * 1048576,
            }
            for number, (name, revision, state) in enumerate(INSTANCES)
        ],
        "series": series,
        "decisions": [
            {
                "seconds_ago": seconds,
                "revision": "hello-00002-xyz",
                "desired": desired,
                "mode": mode,
                "reason": f"{mode}: example reason {index}",
            }
            for index, (seconds, desired, mode) in enumerate(
                [(1.2, 3, "panic"), (8.0, 2, "stable"), (62.4, 1, "stable")]
            )
        ],
        "logs": [
            {
                "timestamp": f"2026-11-25T23:33:{index:02d}.698463Z",
                "severity": severity,
                "message": f"{severity.lower()} line {index}",
                "revision": "hello-00002-xyz",
                "instance": "hello-00002-xyz-a1b2c3",
            }
            for index, severity in enumerate(SEVERITIES)
        ]
        + [
            {
                "timestamp": "2026-11-25T23:33:30.000001Z",
                "severity": "WARNING",
                "message": HOSTILE_MESSAGE,
                "revision": "hello-00002-xyz",
                "instance": "hello-00002-xyz-d4e5f6",
            }
        ],
    }
    worker = {
        "name": "worker",
        "url": "http://worker.localhost:8080",
        "ready": False,
        "readiness": {"status": "False", "reason": "RevisionFailed", "message": WORKER_FAILED},
        "traffic": [],
        "revisions": [
            {
                "name": "worker-00001-qqq",
                "status": "failed",
                "concurrency": 1,
                "instances": {"starting": 0, "ready": 0, "draining": 0},
                "in_flight": 0,
                "queue_length": 0,
                "last_decision": None,
            }
        ],
        "instances": [],
        "series": {"t": [], "instance_cpu_percent": {}, "instance_rss_mb": {}},
        "decisions": [],
        "logs": [],
    }
    return {"generated_at": NOW, "window": window, "services": [hello, worker]}


class SampleOverview:
    """The overview function handed to the app: records the windows asked for."""

    def __init__(self) -> None:
        self.windows: list[int] = []
        self.extra_ready = 0

    def __call__(self, window: int) -> dict[str, Any]:
        self.windows.append(window)
        return sample_overview(window, self.extra_ready)


METRICS_BODY = (
    b"# HELP homerun_up 1 while the daemon runs.\n# TYPE homerun_up gauge\nhomerun_up 1\n"
)
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Servers and the browser ------------------------------------------------------------------------


class Served:
    """A dashboard app on a real uvicorn in a thread, listening on a loopback port."""

    def __init__(self, overview: SampleOverview) -> None:
        self.overview = overview
        app = create_dashboard_app(
            overview, lambda: (METRICS_BODY, METRICS_TYPE), hosts=LOOPBACK_HOSTS
        )
        # The socket listens before uvicorn runs: connections wait in its backlog, so the
        # browser can start at once without probing for readiness.
        self.socket = loopback_listener()
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served(SampleOverview())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: install the test extra (`./scripts/setup test`)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser (as root) first")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page with everything the browser complained about, and every URL it asked for."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.set_default_timeout(PAGE_SECONDS * 1000)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def _failed(self, request: Any) -> None:
        # A reload cancels the refresh on its way (net::ERR_ABORTED): not a failure of the page.
        if "ERR_ABORTED" not in str(request.failure):
            self.errors.append(f"request failed: {request.url} {request.failure}")

    def refreshes(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.refreshes || 0)"))

    def wait_for_refresh(self) -> None:
        """Until the page has rendered an overview it fetched after this call."""
        seen = self.refreshes()
        wait_until(
            self.page, "seen => Number(document.body.dataset.refreshes || 0) >= seen + 2", seen
        )

    def text(self, testid: str) -> str:
        return str(self.page.get_by_test_id(testid).inner_text()).strip()

    def points(self, chart: str) -> int:
        """Data points drawn in a chart: polyline vertices, lone circles and bars."""
        return int(
            self.page.evaluate(
                """testid => {
                    const svg = document.querySelector(`svg[data-testid="${testid}"]`);
                    if (!svg) return -1;
                    let count = svg.querySelectorAll(".marks circle, .marks rect").length;
                    for (const line of svg.querySelectorAll(".marks polyline")) {
                        count += line.points.numberOfItems;
                    }
                    return count;
                }""",
                chart,
            )
        )

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    watcher = Watched(browser)
    try:
        yield watcher
    finally:
        watcher.close()


def screenshot(watched: Watched, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    watched.page.screenshot(path=str(path), full_page=True)
    return path


def only_from(origin: str, urls: list[str]) -> list[str]:
    """The URLs that went anywhere but `origin` (data: URLs stay in the page)."""
    return [url for url in urls if not url.startswith((origin + "/", "data:"))]


# Level 1: the page over a fixed overview ---------------------------------------------------------


def test_page_shows_the_overview(served: Served, watched: Watched) -> None:
    page = watched.page
    page.goto(served.url + "/")
    wait_until(page, "() => Number(document.body.dataset.refreshes || 0) >= 1")

    assert watched.text("instances-ready-hello") == str(SAMPLE_READY)
    assert watched.text("instances-starting-hello") == "1"
    assert watched.text("instances-draining-hello") == "1"
    assert watched.text("instances-ready-worker") == "0"
    link = page.get_by_test_id("url-hello")
    assert link.get_attribute("href") == "http://hello.localhost:8080"
    assert watched.text("status-hello") == "Ready"
    assert watched.text("status-worker") == "Not ready (RevisionFailed)"
    assert page.get_by_test_id("status-worker").get_attribute("title") == WORKER_FAILED
    segments = page.locator('[data-testid="traffic-hello"] .traffic-segment')
    assert [segments.nth(i).get_attribute("data-percent") for i in range(2)] == ["90", "10"]

    # Every chart of hello has points; the rps chart one per sample and code class.
    window = sample_overview(300)
    samples = len(window["services"][0]["series"]["t"])
    for chart in CHARTS:
        assert watched.points(f"chart-{chart}-hello") > 0, chart
    assert watched.points("chart-rps-hello") == 4 * samples
    rps_2xx = page.locator('[data-testid="chart-rps-hello"] [data-series="rps_2xx"] polyline')
    assert rps_2xx.count() == 1
    # The legend shows each series' latest value.
    latest_2xx = window["services"][0]["series"]["rps_2xx"][-1]
    legend = page.get_by_test_id("legend-rps-hello").locator('[data-series="rps_2xx"]')
    assert float(legend.inner_text()) == pytest.approx(latest_2xx, abs=0.05)
    # Latency has no value while there were no requests: the line starts later.
    latency_points = watched.points("chart-latency-hello")
    assert latency_points == 3 * (samples - samples // 10)
    # worker has samples of nothing: its charts say so instead of drawing.
    assert watched.points("chart-rps-worker") == 0
    assert "no samples yet" in (page.get_by_test_id("chart-rps-worker").text_content() or "")

    revisions = page.locator('[data-testid="revisions-hello"] tbody tr')
    assert revisions.count() == 2
    assert "panic" in revisions.first.inner_text()
    assert page.locator('[data-testid="instances-hello"] tbody tr').count() == len(INSTANCES)
    assert page.locator('[data-testid="decisions-hello"] tbody tr').count() == 3

    logs = page.locator('[data-testid="logs-hello"] tbody tr')
    assert logs.count() == len(SEVERITIES) + 1
    # Newest first, each row coloured by its severity.
    assert logs.first.get_attribute("data-severity") == "WARNING"
    colours = {
        severity: page.locator(
            f'[data-testid="logs-hello"] tr[data-severity="{severity}"] .severity'
        ).first.evaluate("node => getComputedStyle(node).backgroundColor")
        for severity in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    }
    assert len(set(colours.values())) == 5, colours
    assert HOSTILE_MESSAGE in logs.first.inner_text()
    assert page.locator("[data-hostile]").count() == 0

    path = screenshot(watched, "dashboard-sample.png")
    assert path.stat().st_size > 10_000
    assert watched.errors == []
    assert only_from(served.url, watched.requests) == []


def test_toggle_fetches_the_hour(served: Served, watched: Watched) -> None:
    page = watched.page
    page.goto(served.url + "/")
    page.wait_for_selector('body[data-window="300"]', state="attached")
    with page.expect_request(lambda request: "window=3600" in request.url):
        page.get_by_test_id("window-3600").click()
    page.wait_for_selector('body[data-window="3600"]', state="attached")
    assert page.get_by_test_id("window-3600").get_attribute("aria-pressed") == "true"
    assert page.get_by_test_id("window-300").get_attribute("aria-pressed") == "false"
    assert 3600 in served.overview.windows
    # One hour in 10 s steps, and the time axis reads in quarter hours.
    assert watched.points("chart-rps-hello") == 4 * 360
    labels = page.locator('[data-testid="chart-rps-hello"] .x-label').all_text_contents()
    assert labels[0] == "now" and "-60m" in labels, labels
    # The choice survives a reload (it is in the URL).
    page.reload()
    page.wait_for_selector('body[data-window="3600"]', state="attached")

    with page.expect_request(lambda request: "window=300" in request.url):
        page.get_by_test_id("window-300").click()
    page.wait_for_selector('body[data-window="300"]', state="attached")
    assert watched.errors == []


def test_page_refreshes_without_a_reload(served: Served, watched: Watched) -> None:
    page = watched.page
    page.goto(served.url + "/")
    wait_until(page, "() => Number(document.body.dataset.refreshes || 0) >= 1")
    page.evaluate("window.__sameDocument = true")
    served.overview.extra_ready = 2
    wait_until(
        page,
        "want => document.querySelector('[data-testid=\"instances-ready-hello\"]')"
        ".textContent === want",
        str(SAMPLE_READY + 2),
    )
    assert page.evaluate("window.__sameDocument === true")
    assert watched.errors == []


def test_api_and_metrics(served: Served) -> None:
    with httpx.Client(base_url=served.url, trust_env=False, timeout=10) as client:
        hour = client.get("/api/overview", params={"window": "3600"})
        assert hour.status_code == 200
        assert hour.json()["window"] == 3600
        assert client.get("/api/overview").json()["window"] == 300
        for wrong in ("60", "abc", "3600.0", ""):
            answer = client.get("/api/overview", params={"window": wrong})
            assert answer.status_code == 400, wrong
            assert "300 or 3600" in answer.json()["error"]
        metrics = client.get("/metrics")
        assert metrics.content == METRICS_BODY
        assert metrics.headers["content-type"] == METRICS_TYPE
        page = client.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in page.headers["content-security-policy"]
        for asset in ("dashboard.js", "chart.js", "dashboard.css", "favicon.svg"):
            assert client.get(f"/static/{asset}").status_code == 200, asset
        assert client.get("/static/missing.js").status_code == 404


def test_only_loopback_names_reach_the_dashboard(served: Served) -> None:
    # A page on another site cannot read the dashboard by pointing its own name at 127.0.0.1
    # (DNS rebinding): the browser sends that name as Host.
    port = served.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=served.url, trust_env=False, timeout=10) as client:
        for host in (f"localhost:{port}", f"dash.localhost:{port}", f"127.0.0.1:{port}", "[::1]"):
            assert client.get("/api/overview", headers={"Host": host}).status_code == 200, host
        for host in (f"attacker.example:{port}", "localhost.attacker.example", "10.0.0.1"):
            answer = client.get("/api/overview", headers={"Host": host})
            assert answer.status_code == 400, host
            assert "host" in answer.text.lower()


def test_the_page_links_to_its_json(served: Served, watched: Watched) -> None:
    page = watched.page
    page.goto(served.url + "/")
    wait_until(page, "() => Number(document.body.dataset.refreshes || 0) >= 1")
    link = page.get_by_test_id("json-link")
    assert link.is_visible()
    assert link.get_attribute("href") == "api/overview?window=300"
    assert page.get_by_test_id("metrics-link").get_attribute("href") == "metrics"
    # The link follows the window the page shows.
    page.get_by_test_id("window-3600").click()
    page.wait_for_selector('body[data-window="3600"]', state="attached")
    assert link.get_attribute("href") == "api/overview?window=3600"
    with httpx.Client(base_url=served.url, trust_env=False, timeout=10) as client:
        answer = client.get("/" + (link.get_attribute("href") or ""))
    assert answer.status_code == 200 and answer.json()["window"] == 3600
    assert not page.get_by_test_id("noscript").is_visible()
    assert watched.errors == []


def test_without_javascript_the_page_says_where_its_data_is(served: Served, browser: Any) -> None:
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    try:
        page = context.new_page()
        page.set_default_timeout(PAGE_SECONDS * 1000)
        page.goto(served.url + "/")
        notice = page.get_by_test_id("noscript")
        assert notice.is_visible()
        text = " ".join(notice.inner_text().split())
        assert "JavaScript, which is off" in text
        assert "/api/overview?window=300" in text and "/metrics" in text
        assert not page.get_by_test_id("status").is_visible()  # no "Loading…" forever
        assert page.get_by_test_id("json-link").is_visible()
        hrefs = notice.locator("a").evaluate_all("links => links.map(link => link.href)")
        assert served.url + "/api/overview?window=300" in hrefs
        with page.expect_navigation():
            notice.locator("a").first.click()
        assert page.url == served.url + "/api/overview?window=300"
        assert '"window":300' in page.content()
    finally:
        context.close()


# Level 2: a real daemon with real traffic --------------------------------------------------------


def dashboard_url(platform: Platform) -> str:
    status = platform.run("status", timeout=30, check=True).stdout
    found = re.search(r"dashboard:\s+(http://\S+)", status)
    if found is None:
        pytest.fail(f"`homerun status` prints no dashboard URL:\n{status}")
    return found.group(1).rstrip("/")


def ready_instances(platform: Platform, service: str) -> int:
    """Ready instances of `service` as `homerun services describe --format summary-json`
    counts them (`--format json` prints the Knative Service)."""
    result = platform.run("services", "describe", service, "--format", "summary-json", check=True)
    described = json.loads(result.stdout)
    platform.revisions_seen |= {revision["name"] for revision in described["revisions"]}
    return sum(
        instance["state"] == "ready"
        for revision in described["revisions"]
        for instance in revision["instances"]
    )


class Traffic:
    """Requests from a few threads until stopped (or a deadline), counted by status."""

    PATHS = ("/usuarios", "/usuarios", "/usuarios", "/produtos", "/missing")

    def __init__(self, platform: Platform, service: str, threads: int, seconds: float) -> None:
        self.platform = platform
        self.service = service
        self.deadline = time.monotonic() + seconds
        self.stopped = threading.Event()
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _run(self, number: int) -> None:
        with self.platform.client(self.service, timeout=30) as client:
            sent = number
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                path = self.PATHS[sent % len(self.PATHS)]
                sent += 1
                try:
                    self.statuses.append(client.get(path).status_code)
                except httpx.HTTPError as error:
                    self.failures.append(f"{path}: {error!r}")


@pytest.mark.e2e
def test_dashboard_of_a_real_daemon(tmp_path: Path, venv_cache: Path, watched: Watched) -> None:
    config = {"stop-grace-seconds": 3, "dashboard-port": free_port()}
    with running_platform(tmp_path / "home", venv_cache, config) as platform:
        url = dashboard_url(platform)
        platform.deploy_ok("dash", APPS / "fastapi_seed")
        page = watched.page
        page.goto(url + "/")
        page.wait_for_selector('[data-testid="service-dash"]')

        with Traffic(platform, "dash", threads=6, seconds=60) as traffic:
            # Requests show on the page: the 2xx line has a sample above zero.
            wait_until(
                page,
                """() => {
                    const value = document.querySelector(
                        '[data-testid="legend-rps-dash"] .legend-value[data-series="rps_2xx"]');
                    return value && Number(value.textContent) > 0;
                }""",
            )
            assert watched.points("chart-rps-dash") > 0
            assert watched.points("chart-latency-dash") > 0
            assert watched.points("chart-instances-dash") > 0
            assert page.locator('[data-testid="logs-dash"] tr.log').count() > 0
            # "Inside the instances": uvicorn's capacity as the runtime inspector measured it
            # inside the instance (anyio's 40 threads for the seed's `def` endpoint).
            wait_until(
                page,
                """() => {
                    const table = document.querySelector('[data-testid="inside-dash"]');
                    return table && table.textContent.includes('40 threads for def (measured)');
                }""",
            )

            # The page's count equals the platform's, read before and after one fresh render
            # so that a scaling step in between cannot make them agree or differ by chance.
            history = []
            deadline = time.monotonic() + 30
            while True:
                before = ready_instances(platform, "dash")
                watched.wait_for_refresh()
                shown = watched.text("instances-ready-dash")
                after = ready_instances(platform, "dash")
                history.append((before, shown, after))
                if str(before) == shown == str(after):
                    break
                assert time.monotonic() < deadline, (
                    f"page vs platform (before, page, after): {history}"
                )
            assert int(shown) >= 1
            screenshot(watched, "dashboard.png")

        assert traffic.failures == [], traffic.failures[:5]
        codes = {status // 100 for status in traffic.statuses}
        assert codes == {2, 4}, sorted(set(traffic.statuses))
        assert watched.errors == []
        assert only_from(url, watched.requests) == []
        metrics = httpx.get(url + "/metrics", timeout=10, trust_env=False)
        assert metrics.status_code == 200
        assert "homerun_" in metrics.text
