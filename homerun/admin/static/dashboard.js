// The dashboard page: fetches /api/overview every 2 seconds and renders one card per service.
// Everything the daemon sends is put on the page as text (textContent), never as markup: log
// lines and scaling reasons come from user apps.

import { Chart, html } from "./chart.js";
import { renderInside } from "./inside.js";
import { renderJobs } from "./jobs.js";
import { renderPools } from "./pools.js";

const REFRESH_MS = 2000;
const FETCH_TIMEOUT_MS = 10000;
const WINDOWS = { 300: "5 min", 3600: "1 hour" };
const LOG_ROWS = 50;
const DECISION_ROWS = 10;

const COLORS = {
  "2xx": "#2e9d5b", "3xx": "#3b7dd8", "4xx": "#e0a100", "5xx": "#d64545",
  p50: "#3b7dd8", p95: "#8a5cd1", p99: "#e07b39",
  starting: "#e0a100", ready: "#2e9d5b", draining: "#8a94a6",
  in_flight: "#3b7dd8", capacity: "#8a94a6", queue: "#d64545", cold_starts: "#8a5cd1",
};
// Instances and revisions get these in the order they first appear, so a colour stays with
// its instance while others come and go.
const PALETTE = ["#3b7dd8", "#e07b39", "#2e9d5b", "#8a5cd1", "#d64545", "#1f9fb4", "#c2559b",
  "#7a8b2d", "#b07d4f", "#5262b8"];

// Formats --------------------------------------------------------------------------------------

function trimmed(value, digits) {
  return Number(value.toFixed(digits)).toString();
}

const formats = {
  count: (value) => trimmed(value, 1),
  rate: (value) => (value >= 1000 ? `${trimmed(value / 1000, 1)}k` : trimmed(value, value < 10 ? 2 : 1)),
  ms: (value) => (value >= 1000 ? `${trimmed(value / 1000, 2)} s` : `${trimmed(value, value < 10 ? 1 : 0)} ms`),
  percent: (value) => `${trimmed(value, value < 10 ? 1 : 0)}%`,
  mb: (value) => (value >= 1024 ? `${trimmed(value / 1024, 2)} GB` : `${trimmed(value, value < 10 ? 1 : 0)} MB`),
};

function ago(seconds) {
  if (seconds < 1) return "just now";
  if (seconds < 60) return `${trimmed(seconds, seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${trimmed(seconds / 3600, 1)} h ago`;
}

function clockTime(timestamp) {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return String(timestamp);
  const time = date.toLocaleTimeString([], { hour12: false });
  return `${time}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

function latest(values) {
  for (let index = (values || []).length - 1; index >= 0; index -= 1) {
    if (values[index] != null) return values[index];
  }
  return null;
}

function sum(items, pick) {
  return items.reduce((total, item) => total + (Number(pick(item)) || 0), 0);
}

function badge(text, kind) {
  return html("span", { className: `badge ${kind}`, text });
}

// A service's Knative Ready condition, worded as `homerun services describe` words it: not
// ready after a failed deploy even while an earlier revision serves, unknown while one deploys.
function readiness(service) {
  const { status, reason, message } = service.readiness;
  if (status === "True") return { text: "Ready", kind: "good", title: "" };
  return { text: reason ? `Not ready (${reason})` : "Not ready",
    kind: status === "False" ? "bad" : "warn", title: message || "" };
}

// Instance names repeat their service's name: "hello-00001-abc-1a2b3c" -> "00001-abc-1a2b3c".
function shortName(name, service) {
  return name && name.startsWith(`${service}-`) ? name.slice(service.length + 1) : name;
}

class ColorBook {
  constructor() {
    this.colors = new Map();
  }

  get(name) {
    if (!this.colors.has(name)) this.colors.set(name, PALETTE[this.colors.size % PALETTE.length]);
    return this.colors.get(name);
  }
}

// Charts ---------------------------------------------------------------------------------------

function fixed(key, label, service) {
  return { key, label, values: service.series[key] || [], color: COLORS[label] || COLORS[key] };
}

// A legend names an instance by its own suffix ("hello-00001-abc-1a2b3c" -> "1a2b3c"): the
// colour ties it to its row in the instances table, which shows the revision too.
function perInstance(card, values) {
  return Object.entries(values || {}).sort(([a], [b]) => a.localeCompare(b)).map(([name, series]) => ({
    key: name, label: name.slice(name.lastIndexOf("-") + 1), title: name, values: series,
    color: card.instanceColors.get(name),
  }));
}

const CHARTS = [
  { id: "rps", title: "Requests/s by code class", format: formats.rate,
    series: (service) => ["2xx", "3xx", "4xx", "5xx"].map((code) => fixed(`rps_${code}`, code, service)) },
  { id: "latency", title: "Latency", format: formats.ms,
    series: (service) => ["p50", "p95", "p99"].map((q) => fixed(`${q}_ms`, q, service)) },
  { id: "concurrency", title: "Concurrency: in flight vs capacity", format: formats.count,
    integer: true,
    series: (service) => [fixed("in_flight", "in flight", service),
      { ...fixed("capacity", "capacity", service), dashed: true }] },
  { id: "queue", title: "Requests waiting in the queue", format: formats.count, integer: true,
    series: (service) => [fixed("queue", "queued", service)] },
  { id: "instances", title: "Instances by state", format: formats.count, integer: true,
    step: true, minTop: 2,
    series: (service) => ["starting", "ready", "draining"].map((s) => fixed(s, s, service)) },
  { id: "cold-starts", title: "Cold starts", format: formats.count, integer: true, kind: "bars",
    series: (service) => [fixed("cold_starts", "cold starts", service)] },
  { id: "cpu", title: "CPU per instance", format: formats.percent, minTop: 5,
    series: (service, card) => perInstance(card, service.series.instance_cpu_percent) },
  { id: "memory", title: "Memory per instance", format: formats.mb, minTop: 64,
    series: (service, card) => perInstance(card, service.series.instance_rss_mb) },
];

// One service ----------------------------------------------------------------------------------

class ServiceCard {
  constructor(name) {
    this.name = name;
    this.instanceColors = new ColorBook();
    this.revisionColors = new ColorBook();

    this.title = html("h2", { text: name });
    this.link = html("a", { className: "url", "data-testid": `url-${name}`, target: "_blank",
      rel: "noopener noreferrer" });
    this.status = html("span", { "data-testid": `status-${name}` });
    this.traffic = html("div", { className: "traffic", "data-testid": `traffic-${name}` });
    this.tiles = html("div", { className: "tiles" });
    this.tileValues = {};
    for (const [key, label] of [["instances-ready", "Ready instances"],
      ["instances-starting", "Starting"], ["instances-draining", "Draining"],
      ["concurrency", "In flight / capacity"], ["queue", "Queued"], ["rps", "Requests/s"],
      ["p95", "p95 latency"]]) {
      const value = html("div", { className: "tile-value", "data-testid": `${key}-${name}` });
      this.tileValues[key] = value;
      this.tiles.append(html("div", { className: "tile" }, value,
        html("div", { className: "tile-label", text: label })));
    }

    this.charts = CHARTS.map((spec) => ({
      spec,
      chart: new Chart({ title: spec.title, testid: `chart-${spec.id}-${name}`,
        legendTestid: `legend-${spec.id}-${name}`, format: spec.format,
        kind: spec.kind, step: spec.step, integer: spec.integer, minTop: spec.minTop ?? 1 }),
    }));

    this.revisions = html("tbody");
    this.inside = html("tbody");
    this.instances = html("tbody");
    this.decisions = html("tbody");
    this.logs = html("tbody");

    this.element = html("section", { className: "service", id: `service-${name}`,
      "data-testid": `service-${name}` },
      html("header", { className: "service-header" },
        html("div", { className: "service-title" }, this.title, this.status, this.link),
        this.traffic),
      this.tiles,
      html("div", { className: "charts" }, ...this.charts.map(({ chart }) => chart.element)),
      html("div", { className: "panels" },
        panel("Revisions", table(["Revision", "Status", "#Traffic", "#Concurrency", "#Starting",
          "#Ready", "#Draining", "#In flight", "#Queued", "Last scaling decision"], this.revisions,
          `revisions-${name}`), "wide"),
        panel("Inside the instances", table(["Revision", "Capacity", "#Loop lag",
          "#Thread pool", "Blocking calls", "Ramp", "Cost so far", "Advice"], this.inside, `inside-${name}`), "wide"),
        panel("Instances", table(["Instance", "Revision", "State", "#PID", "#In flight", "#CPU",
          "#Memory"], this.instances, `instances-${name}`)),
        panel("Scaling decisions", table(["When", "Revision", "#Desired", "Mode", "Reason"],
          this.decisions, `decisions-${name}`)),
        panel("Latest logs", table(["Time", "Severity", "Source", "Message"], this.logs,
          `logs-${name}`), "wide logs-panel")),
    );
  }

  update(service, overview) {
    this.link.href = service.url;
    this.link.textContent = service.url;
    const condition = readiness(service);
    this.status.textContent = condition.text;
    this.status.className = `badge ${condition.kind}`;
    this.status.title = condition.title;
    this.updateTraffic(service.traffic || []);
    this.updateTiles(service);
    this.updateCharts(service, overview);
    this.updateRevisions(service);
    renderInside(service, this.inside, emptyRow);
    this.updateInstances(service);
    this.updateDecisions(service);
    this.updateLogs(service);
  }

  updateTraffic(traffic) {
    const bar = html("div", { className: "traffic-bar" });
    const legend = html("ul", { className: "traffic-legend" });
    for (const target of traffic) {
      const color = this.revisionColors.get(target.revision);
      const segment = html("span", { className: "traffic-segment", "data-revision": target.revision,
        "data-percent": target.percent, title: `${target.revision}: ${target.percent}%` });
      segment.style.setProperty("--share", `${target.percent}%`);
      segment.style.setProperty("--color", color);
      bar.append(segment);
      const swatch = html("span", { className: "swatch" });
      swatch.style.setProperty("--color", color);
      legend.append(html("li", {}, swatch,
        html("span", { text: `${target.percent}% ${shortName(target.revision, this.name)}` }),
        target.tag ? badge(`tag ${target.tag}`, "neutral") : null));
    }
    if (!traffic.length) legend.append(html("li", { className: "muted", text: "no traffic targets" }));
    this.traffic.replaceChildren(bar, legend);
  }

  updateTiles(service) {
    const revisions = service.revisions || [];
    const instances = service.instances || [];
    const states = (state) => sum(revisions, (revision) => revision.instances?.[state]);
    const capacity = sum(instances.filter((i) => i.state === "ready"), (i) => i.capacity);
    const series = service.series || {};
    const rps = ["2xx", "3xx", "4xx", "5xx"].reduce(
      (total, code) => total + (latest(series[`rps_${code}`]) || 0), 0);
    const p95 = latest(series.p95_ms);
    const values = {
      "instances-ready": String(states("ready")),
      "instances-starting": String(states("starting")),
      "instances-draining": String(states("draining")),
      concurrency: `${sum(revisions, (r) => r.in_flight)} / ${capacity}`,
      queue: String(sum(revisions, (r) => r.queue_length)),
      rps: formats.rate(rps),
      p95: p95 == null ? "–" : formats.ms(p95),
    };
    for (const [key, text] of Object.entries(values)) this.tileValues[key].textContent = text;
  }

  updateCharts(service, overview) {
    const series = { t: [], ...(service.series || {}) };
    for (const instance of service.instances || []) this.instanceColors.get(instance.name);
    const view = { ...service, series };
    const end = Number(overview.generated_at) || latest(series.t) || 0;
    for (const { spec, chart } of this.charts) {
      chart.update({ t: series.t, start: end - overview.window, end,
        series: spec.series(view, this) });
    }
  }

  updateRevisions(service) {
    const percent = new Map();
    const tags = new Map();
    for (const target of service.traffic || []) {
      percent.set(target.revision, (percent.get(target.revision) || 0) + target.percent);
      if (target.tag) tags.set(target.revision, [...(tags.get(target.revision) || []), target.tag]);
    }
    const rows = (service.revisions || []).map((revision) => {
      const decision = revision.last_decision;
      const decisionCell = decision
        ? html("td", { className: "decision" },
          html("div", {}, `${decision.desired} instance${decision.desired === 1 ? "" : "s"} `,
            badge(decision.mode, decision.mode === "panic" ? "bad" : "neutral"),
            html("span", { className: "muted", text: ` ${ago(decision.seconds_ago)}` })),
          html("div", { className: "reason", text: decision.reason }))
        : html("td", { className: "muted", text: "–" });
      const counts = revision.instances || {};
      const trafficText = `${percent.get(revision.name) || 0}%`
        + (tags.has(revision.name) ? ` (tag ${tags.get(revision.name).join(", ")})` : "");
      return html("tr", { "data-revision": revision.name },
        html("td", { className: "mono nowrap", text: revision.name }),
        html("td", {}, badge(revision.status, statusKind(revision.status))),
        html("td", { className: "num", text: trafficText }),
        html("td", { className: "num", text: revision.concurrency ?? "–" }),
        html("td", { className: "num", text: counts.starting ?? 0 }),
        html("td", { className: "num", "data-testid": `revision-ready-${revision.name}`,
          text: counts.ready ?? 0 }),
        html("td", { className: "num", text: counts.draining ?? 0 }),
        html("td", { className: "num", text: revision.in_flight ?? 0 }),
        html("td", { className: "num", text: revision.queue_length ?? 0 }),
        decisionCell);
    });
    this.revisions.replaceChildren(...(rows.length ? rows : [emptyRow(10, "no revisions")]));
  }

  updateInstances(service) {
    const rows = (service.instances || []).map((instance) => {
      const swatch = html("span", { className: "swatch" });
      swatch.style.setProperty("--color", this.instanceColors.get(instance.name));
      return html("tr", { "data-instance": instance.name, "data-state": instance.state },
        html("td", { className: "mono nowrap", title: instance.name }, swatch,
          shortName(instance.name, this.name)),
        html("td", { className: "mono nowrap", text: shortName(instance.revision, this.name) }),
        html("td", {}, badge(instance.state, statusKind(instance.state))),
        html("td", { className: "num", text: instance.pid ?? "–" }),
        html("td", { className: "num", text: `${instance.in_flight ?? 0} / ${instance.capacity ?? "–"}` }),
        html("td", { className: "num",
          text: instance.cpu_percent == null ? "–" : formats.percent(instance.cpu_percent) }),
        html("td", { className: "num",
          text: instance.rss_bytes == null ? "–" : formats.mb(instance.rss_bytes / 1048576) }));
    });
    this.instances.replaceChildren(...(rows.length ? rows : [emptyRow(7, "no instances running")]));
  }

  updateDecisions(service) {
    const decisions = [...(service.decisions || [])]
      .sort((a, b) => a.seconds_ago - b.seconds_ago).slice(0, DECISION_ROWS);
    const rows = decisions.map((decision) => html("tr", {},
      html("td", { className: "nowrap muted", text: ago(decision.seconds_ago) }),
      html("td", { className: "mono nowrap", text: shortName(decision.revision, this.name) }),
      html("td", { className: "num", text: decision.desired }),
      html("td", {}, badge(decision.mode, decision.mode === "panic" ? "bad" : "neutral")),
      html("td", { className: "reason", text: decision.reason })));
    this.decisions.replaceChildren(...(rows.length ? rows : [emptyRow(5, "no scaling decisions yet")]));
  }

  updateLogs(service) {
    // Newest first; ISO timestamps of one format sort as text.
    const entries = [...(service.logs || [])]
      .sort((a, b) => String(b.timestamp).localeCompare(String(a.timestamp))).slice(0, LOG_ROWS);
    const rows = entries.map((entry) => {
      const severity = String(entry.severity || "DEFAULT").toUpperCase();
      const source = entry.instance ? shortName(entry.instance, this.name)
        : entry.revision ? shortName(entry.revision, this.name) : "platform";
      return html("tr", { className: `log sev-${severity.toLowerCase()}`, "data-severity": severity },
        html("td", { className: "nowrap mono muted", title: entry.timestamp,
          text: clockTime(entry.timestamp) }),
        html("td", {}, html("span", { className: "severity", text: severity })),
        html("td", { className: "mono nowrap", text: source }),
        html("td", { className: "message", text: logMessage(entry) }));
    });
    this.logs.replaceChildren(...(rows.length ? rows : [emptyRow(4, "no log entries yet")]));
  }

  redraw() {
    for (const { chart } of this.charts) chart.draw();
  }
}

// A request entry without a message reads as Cloud Run's request line: "GET 200 /path".
function logMessage(entry) {
  if (entry.message != null) return String(entry.message);
  const request = entry.httpRequest;
  if (request) return `${request.requestMethod ?? ""} ${request.status ?? "-"} ${request.requestUrl ?? ""}`;
  return "";
}

function statusKind(status) {
  if (status === "ready" || status === "active") return "good";
  if (status === "failed") return "bad";
  if (status === "starting" || status === "draining" || status === "deploying") return "warn";
  return "neutral";
}

function panel(title, body, extraClass = "") {
  return html("div", { className: `panel ${extraClass}`.trim() }, html("h3", { text: title }),
    html("div", { className: "table-scroll" }, body));
}

// Headings starting with "#" head numeric columns, aligned right like their numbers.
function table(headings, body, testid) {
  const cells = headings.map((heading) => (heading.startsWith("#")
    ? html("th", { className: "num", text: heading.slice(1) }) : html("th", { text: heading })));
  return html("table", { "data-testid": testid }, html("thead", {}, html("tr", {}, ...cells)), body);
}

function emptyRow(columns, text) {
  return html("tr", { className: "empty-row" },
    html("td", { colspan: columns, className: "muted", text }));
}

// The page -------------------------------------------------------------------------------------

const page = {
  window: windowFromHash(),
  generation: 0,
  timer: null,
  refreshes: 0,
  cards: new Map(),
  services: document.getElementById("services"),
  summary: document.getElementById("summary"),
  jobs: document.getElementById("jobs"),
  pools: document.getElementById("worker-pools"),
  empty: document.getElementById("empty"),
  status: document.getElementById("status"),
};

function windowFromHash() {
  const match = /window=(\d+)/.exec(window.location.hash);
  return match && WINDOWS[match[1]] ? Number(match[1]) : 300;
}

function render(overview) {
  const services = overview.services || [];
  const seen = new Set();
  services.forEach((service, index) => {
    seen.add(service.name);
    let card = page.cards.get(service.name);
    if (!card) {
      card = new ServiceCard(service.name);
      page.cards.set(service.name, card);
    }
    // Append before updating so the charts can measure their width.
    if (page.services.children[index] !== card.element) {
      page.services.insertBefore(card.element, page.services.children[index] || null);
    }
    card.update(service, overview);
  });
  for (const [name, card] of page.cards) {
    if (!seen.has(name)) {
      card.element.remove();
      page.cards.delete(name);
    }
  }
  page.empty.hidden = services.length > 0 || (overview.jobs || []).length > 0
    || (overview.worker_pools || []).length > 0;
  renderSummary(services);
  renderJobs(overview.jobs || [], page.jobs);
  renderPools(overview.worker_pools || [], page.pools);
  page.refreshes += 1;
  document.body.dataset.window = String(overview.window);
  document.body.dataset.generatedAt = String(overview.generated_at);
  document.body.dataset.refreshes = String(page.refreshes);
}

function renderSummary(services) {
  const rows = services.map((service) => {
    const ready = sum(service.revisions || [], (revision) => revision.instances?.ready);
    const condition = readiness(service);
    const series = service.series || {};
    const rps = ["2xx", "3xx", "4xx", "5xx"].reduce(
      (total, code) => total + (latest(series[`rps_${code}`]) || 0), 0);
    const traffic = (service.traffic || [])
      .map((target) => `${target.percent}% ${shortName(target.revision, service.name)}`
        + (target.tag ? ` (${target.tag})` : "")).join(", ");
    return html("tr", {},
      html("td", {}, html("a", { href: `#service-${service.name}`, text: service.name })),
      html("td", {}, html("a", { href: service.url, target: "_blank", rel: "noopener noreferrer",
        text: service.url })),
      html("td", { title: condition.title }, badge(condition.text, condition.kind)),
      html("td", { className: "mono", text: traffic || "–" }),
      html("td", { className: "num", text: ready }),
      html("td", { className: "num", text: formats.rate(rps) }));
  });
  page.summary.replaceChildren(...rows);
  page.summary.closest("section").hidden = services.length === 0;
}

function setStatus(text, kind) {
  page.status.textContent = text;
  page.status.className = `status ${kind}`;
}

async function refresh() {
  clearTimeout(page.timer);
  const generation = ++page.generation;
  if (document.hidden) {
    // Nothing to look at: check again later, and at once when the tab is shown.
    page.timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(`api/overview?window=${page.window}`,
      { cache: "no-store", signal: abort.signal });
    if (!response.ok) throw new Error(`the daemon answered HTTP ${response.status}`);
    const overview = await response.json();
    // The toggle started a newer fetch while this one was on its way: drop this answer.
    if (generation !== page.generation) return;
    render(overview);
    const when = new Date().toLocaleTimeString([], { hour12: false });
    setStatus(`Live · updated ${when}`, "live");
  } catch (error) {
    if (generation !== page.generation) return;
    const reason = error.name === "AbortError" ? "no answer within 10 s" : error.message;
    setStatus(`Cannot reach the daemon (${reason}); retrying every ${REFRESH_MS / 1000} s`, "down");
  } finally {
    clearTimeout(timeout);
    if (generation === page.generation) page.timer = setTimeout(refresh, REFRESH_MS);
  }
}

function selectWindow(seconds) {
  page.window = seconds;
  for (const button of document.querySelectorAll("[data-window-seconds]")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.windowSeconds) === seconds));
  }
  window.history.replaceState(null, "", `#window=${seconds}`);
  document.getElementById("json-link").href = `api/overview?window=${seconds}`;
}

for (const button of document.querySelectorAll("[data-window-seconds]")) {
  button.addEventListener("click", () => {
    selectWindow(Number(button.dataset.windowSeconds));
    refresh();
  });
}
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});
let resizeFrame = null;
window.addEventListener("resize", () => {
  cancelAnimationFrame(resizeFrame);
  resizeFrame = requestAnimationFrame(() => {
    for (const card of page.cards.values()) card.redraw();
  });
});

selectWindow(page.window);
refresh();
