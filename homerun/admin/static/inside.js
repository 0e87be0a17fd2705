// The dashboard's "Inside the instances" panel: what the runtime inspector measured per
// revision (the server's capacity next to --concurrency, event-loop lag, anyio's thread pool,
// blocking calls in coroutines) and the advisor's warnings. What the daemon sends goes in as
// text, never as markup.

import { html } from "./chart.js";

function capacityText(capacity, concurrency) {
  if (!capacity) return "–";
  const how = capacity.source === "measured" ? "measured" : "from the command";
  const server = capacity.requests_at_once != null
    ? `${capacity.server} ${capacity.workers} × ${capacity.threads} = ${capacity.requests_at_once}`
    : `${capacity.server}, ${capacity.workers} loop(s)`
      + (capacity.sync_pool ? `, ${capacity.sync_pool} threads for def` : "");
  return `${server} (${how}) behind ${concurrency}`;
}

function lagText(inside) {
  if (inside.loop_lag_ms_mean == null) return "–";
  return `${inside.loop_lag_ms_mean} ms mean, ${inside.loop_lag_ms_max} ms max`;
}

function poolText(inside) {
  if (!inside.pool_total) return "–";
  const waiting = inside.pool_peak_waiting ? `, ${inside.pool_peak_waiting} waited` : "";
  return `${inside.pool_peak_borrowed} / ${inside.pool_total} peak${waiting}`;
}

function blockingCell(inside) {
  const places = inside.blocking || [];
  if (!places.length) return html("td", { className: "muted", text: "none seen" });
  return html("td", {}, ...places.map((place) => html("div", { className: "mono",
    text: `${place.place} in ${place.function}: ${place.count}×, worst ${place.worst_ms} ms` })));
}

function rampCell(inside) {
  const ramp = inside.ramp;
  if (!ramp) return html("td", { className: "muted", text: "homerun services advise --ramp" });
  const steps = (ramp.steps || []).map((step) => html("div", { className: "mono",
    text: `${step.concurrency} in flight: ${step.requests_per_second} req/s, p99 `
      + `${step.p99_ms ?? "–"} ms${step.concurrency === ramp.knee ? "  ← knee" : ""}` }));
  return html("td", {}, html("div", { text: ramp.knee == null ? "no knee found"
    : `knee ${ramp.knee} (${ramp.knee_rps} req/s)` }), ...steps);
}

function costCell(inside) {
  const estimate = inside.cost;
  if (!estimate) return html("td", { className: "muted", text: "–" });
  return html("td", { title: `prices of ${estimate.prices_date}: ${estimate.prices_source}` },
    ...(estimate.costs || []).map((cost) => html("div", { className: "mono",
      text: `${cost.billing}: $${cost.usd.toFixed(6)} (${cost.vcpu_seconds} vCPU-s, `
        + `${cost.gib_seconds} GiB-s${cost.requests ? `, ${cost.requests} req` : ""})` })));
}

export function renderInside(service, tbody, emptyRow) {
  const rows = (service.revisions || []).filter((revision) => revision.inside).map((revision) => {
    const inside = revision.inside;
    return html("tr", { "data-revision": revision.name },
      html("td", { className: "mono nowrap", text: revision.name }),
      html("td", { text: capacityText(inside.capacity, revision.concurrency) }),
      html("td", { className: "num", text: lagText(inside) }),
      html("td", { className: "num", text: poolText(inside) }),
      blockingCell(inside),
      rampCell(inside),
      costCell(inside),
      html("td", {}, ...(inside.warnings || []).map((warning) =>
        html("div", { className: "reason", text: warning }))));
  });
  tbody.replaceChildren(...(rows.length ? rows
    : [emptyRow(8, "nothing measured yet (Python instances report once they serve)")]));
}
