// The dashboard's jobs table: each job's newest executions, their tasks counted by state.
// As everywhere on the page, what the daemon sends goes in as text, never as markup.

import { html } from "./chart.js";

const STATUS_KIND = { succeeded: "good", failed: "bad", running: "warn", cancelled: "neutral" };

function when(epochSeconds) {
  if (epochSeconds == null) return "–";
  return new Date(epochSeconds * 1000).toLocaleString([], { hour12: false });
}

function tasks(execution) {
  const parts = [`${execution.succeeded}/${execution.task_count} succeeded`];
  if (execution.running) parts.push(`${execution.running} running`);
  if (execution.failed) parts.push(`${execution.failed} failed`);
  if (execution.pending) parts.push(`${execution.pending} waiting`);
  if (execution.cancelled) parts.push(`${execution.cancelled} cancelled`);
  return parts.join(", ");
}

function row(job, execution) {
  const status = execution
    ? html("span", { className: `badge ${STATUS_KIND[execution.status] || "neutral"}`,
      text: execution.status })
    : html("span", { className: "muted", text: "never executed" });
  return html("tr", { "data-testid": `job-${job.name}` },
    html("td", { text: job.schedule
      ? `${job.name} (${job.schedule}, ${job.time_zone})` : job.name }),
    html("td", { className: "mono", text: execution ? execution.name : "–" }),
    html("td", {}, status),
    html("td", { text: execution ? tasks(execution) : `${job.task_count} task(s)` }),
    html("td", { className: "num", text: execution ? execution.retries : "–" }),
    html("td", { text: execution ? when(execution.created_at) : "–" }),
    html("td", { className: "muted", text: execution?.message || "" }));
}

// One row per execution (the newest first), or one per job never executed.
export function renderJobs(jobs, tbody) {
  const rows = jobs.flatMap((job) => ((job.executions || []).length
    ? job.executions.map((execution) => row(job, execution)) : [row(job, null)]));
  tbody.replaceChildren(...rows);
  tbody.closest("section").hidden = jobs.length === 0;
}
