// The dashboard's worker pools table: each pool's instances running of its count.
// As everywhere on the page, what the daemon sends goes in as text, never as markup.

import { html } from "./chart.js";

function row(pool) {
  const kind = pool.running === pool.instances ? "good" : "warn";
  return html("tr", { "data-testid": `pool-${pool.name}` },
    html("td", { text: pool.name }),
    html("td", { className: "mono", text: pool.revision }),
    html("td", {}, html("span", { className: `badge ${kind}`,
      text: `${pool.running}/${pool.instances} running` })),
    html("td", { className: "num", text: pool.restarts }),
    html("td", { className: "muted", text: pool.last_exit || "" }));
}

export function renderPools(pools, tbody) {
  tbody.replaceChildren(...pools.map(row));
  tbody.closest("section").hidden = pools.length === 0;
}
