// One batch: status, counters, progress and ETA (live from its event stream), the throughput chart (from
// the stored timeline, so it survives a reload), controls, downloads, items, parameters and webhooks.

import { download, follow, get, post } from "./api.js";
import { drawChart } from "./chart.js";
import {
  FINAL,
  ITEM_STATUSES,
  announce,
  badge,
  clear,
  compact,
  confirmAction,
  done,
  etaText,
  fmtCost,
  fmtDateTime,
  fmtDuration,
  fmtInt,
  fmtRate,
  h,
  setText,
  statusText,
} from "./ui.js";

const ITEMS_PAGE = 50;
const CHART_EVERY_MS = 3000; // the timeline is a scan of the batch's items: not on every progress event
const ITEMS_EVERY_MS = 5000;

export function batchView(main, { batchId }) {
  document.title = `${batchId} · batchyard`;
  const abort = new AbortController();
  const signal = abort.signal;
  const path = `/batches/${encodeURIComponent(batchId)}`;
  let batch = null;
  let lastQuarter = null;
  let chartAt = 0;
  let chartTimer = null;
  let itemsAt = 0;

  // -- the frame ----------------------------------------------------------------------------------------

  const statusLine = h("p", { id: "batch-status", class: "title-row" });
  const description = h("p", { class: "muted" });
  const problem = h("div", { class: "alert", role: "alert", hidden: true });

  const buttons = {
    start: h("button", { type: "button", id: "action-start", onclick: () => act("start") }, "Start"),
    pause: h("button", { type: "button", id: "action-pause", onclick: () => act("pause") }, "Pause"),
    resume: h("button", { type: "button", id: "action-resume", onclick: () => act("resume") }, "Resume"),
    cancel: h("button", { type: "button", id: "action-cancel", class: "danger", onclick: cancel }, "Cancel…"),
    retry: h("button", { type: "button", id: "action-retry", onclick: () => act("retry") }, "Retry failed items"),
  };
  const format = h("select", { id: "download-format" },
    h("option", { value: "json" }, "JSON (with summary)"), h("option", { value: "csv" }, "CSV"),
    h("option", { value: "jsonl" }, "JSONL"));
  const errorsOnly = h("input", { type: "checkbox", id: "download-errors" });
  const downloadButton = h("button", { type: "button", id: "download", onclick: save }, "Download results");

  const bar = h("progress", { id: "batch-progress", class: "big-progress", max: "100", "aria-labelledby": "progress-h",
    "aria-describedby": "progress-text" });
  const progressText = h("p", { id: "progress-text" });
  const counters = h("dl", { class: "counters" });
  const chart = h("div", { class: "chart", id: "chart" }, h("p", { class: "muted" }, "Loading…"));

  const itemStatus = h("select", { id: "items-status" }, h("option", { value: "" }, "Any status"),
    ITEM_STATUSES.map((s) => h("option", { value: s }, s)));
  const itemsBody = h("tbody");
  const itemsEmpty = h("p", { class: "empty", hidden: true }, "No items match.");
  const prev = h("button", { type: "button", id: "items-prev", onclick: () => pageItems(-1) }, "Previous page");
  const nextButton = h("button", { type: "button", id: "items-next", onclick: () => pageItems(1) }, "Next page");
  const pageText = h("span", { class: "muted", role: "status" });
  const itemsSection = h("section", { "aria-labelledby": "items-h" });

  const props = h("dl", { class: "props" });
  const deliveries = h("div", {}, h("p", { class: "muted" }, "Loading…"));

  main.append(
    h("nav", { class: "breadcrumb", "aria-label": "Breadcrumb" },
      h("a", { href: "#/" }, "Batches"), " › ", h("span", { "aria-current": "page" }, batchId)),
    h("h1", {}, "Batch ", h("code", {}, batchId)),
    statusLine,
    description,
    problem,
    h("div", { class: "toolbar", role: "group", "aria-label": "Batch actions" },
      Object.values(buttons),
      h("span", { class: "sep", "aria-hidden": "true" }),
      h("label", { for: "download-format" }, "Results as"), format,
      h("label", { class: "check", for: "download-errors" }, errorsOnly, "Failed items only"),
      downloadButton),
    h("div", { class: "grid-2" },
      h("section", { class: "panel", "aria-labelledby": "progress-h" },
        h("h2", { id: "progress-h" }, "Progress"), bar, progressText, counters),
      h("section", { class: "panel", "aria-labelledby": "chart-h" },
        h("h2", { id: "chart-h" }, "Throughput and failures"), chart)),
    itemsSection,
    h("div", { class: "grid-2" },
      h("section", { "aria-labelledby": "params-h" }, h("h2", { id: "params-h" }, "Parameters"), props),
      h("section", { "aria-labelledby": "hooks-h" }, h("h2", { id: "hooks-h" }, "Webhook deliveries"), deliveries)),
  );

  itemsSection.append(
    h("h2", { id: "items-h" }, "Items"),
    h("div", { class: "filters" },
      h("div", { class: "field" }, h("label", { for: "items-status" }, "Status"), itemStatus)),
    h("div", { class: "table-wrap", role: "region", "aria-labelledby": "items-caption", tabindex: "0" },
      h("table", { id: "items-table" },
        h("caption", { id: "items-caption", class: "sr-only" }, "Items of the batch, in input order"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col", class: "num" }, "#"), h("th", { scope: "col" }, "Item"),
          h("th", { scope: "col" }, "Status"), h("th", { scope: "col", class: "num" }, "Attempts"),
          h("th", { scope: "col", class: "num" }, "Duration"), h("th", { scope: "col" }, "Payload"),
          h("th", { scope: "col" }, "Result or error"))),
        itemsBody),
      itemsEmpty),
    h("div", { class: "buttons" }, prev, nextButton, pageText),
  );

  function fail(err, what) {
    if (signal.aborted) return;
    problem.hidden = false;
    problem.textContent = `${what}: ${err.message}`;
  }

  // -- rendering the batch ------------------------------------------------------------------------------

  function render(b) {
    const previous = batch;
    batch = b;
    const text = statusText(b);
    if (!previous || statusText(previous) !== text || previous.throttled !== b.throttled) {
      clear(statusLine).append(badge(b.status, text), h("span", { class: "muted" }, `processor ${b.processor}`));
      if (b.status_reason) statusLine.append(h("span", { class: "muted" }, b.status_reason));
      // Workers past their memory, disk or CPU thresholds: why nothing starts, while it lasts.
      if (b.throttled) statusLine.append(h("span", { class: "muted" }, b.throttled));
      if (previous && statusText(previous) !== text) announce(`Batch is now ${text}.`);
    }
    setText(description, b.description || "");
    description.hidden = !b.description;

    buttons.start.hidden = b.status !== "pending";
    buttons.pause.disabled = b.status !== "running";
    buttons.resume.disabled = b.status !== "paused";
    buttons.cancel.disabled = FINAL.has(b.status) || b.status === "cancelling";
    buttons.retry.disabled = !(["completed", "failed"].includes(b.status) && b.items_failed > 0);

    bar.value = b.progress_percent;
    const finished = done(b);
    setText(progressText, `${Math.floor(b.progress_percent)}% · ${fmtInt(finished)} of ${fmtInt(b.items_total)} items done`
      + (b.status === "running" && b.estimated_completion ? ` · ETA ${etaText(b)}` : ""));
    // Progress is announced by quarters only: a screen reader reading every tick would be unusable.
    const quarter = Math.floor(b.progress_percent / 25);
    if (lastQuarter !== null && quarter > lastQuarter && quarter < 4) announce(`${quarter * 25}% done.`);
    lastQuarter = quarter;

    const stats = [
      ["Total", fmtInt(b.items_total)], ["Pending", fmtInt(b.items_pending)], ["Running", fmtInt(b.items_running)],
      ["Succeeded", fmtInt(b.items_succeeded)], ["Failed", fmtInt(b.items_failed)],
      ["Cancelled", fmtInt(b.items_cancelled)], ["Attempts", fmtInt(b.attempts_total)],
      ["Items/s", fmtRate(b.throughput_per_s)], ["ETA", etaText(b)], ["Active time", fmtDuration(b.active_seconds)],
      ["Cost", fmtCost(b.cost_total, b.cost_unit)],
      // Estimated and projected totals, the budget and the shared resource: only for batches that have them.
      ...(b.cost_estimated != null ? [["Estimated cost", fmtCost(b.cost_estimated, b.cost_unit)]] : []),
      ...(b.cost_projected != null && !FINAL.has(b.status)
        ? [["Projected cost", fmtCost(b.cost_projected, b.cost_unit)]] : []),
      ...(b.budget != null ? [["Budget", fmtCost(b.budget, b.cost_unit) || "0"]] : []),
      ...(b.resource ? [["Resource", resourceText(b.resource)]] : []),
    ];
    if (counters.children.length !== stats.length
        || stats.some(([k], i) => counters.children[i].dataset.counter !== k)) {
      clear(counters).append(...stats.map(([k]) => h("div", { dataset: { counter: k } }, h("dt", {}, k), h("dd"))));
    }
    stats.forEach(([, v], i) => setText(counters.children[i].lastChild, v));
    renderProps(b);
  }

  function resourceText(r) {
    if (!r.capacity) return `${r.status}, ${fmtInt(r.used)} used`;
    return `${r.status}, ${fmtInt(r.used)} of ${fmtInt(r.capacity)} used (${r.utilization_percent}%)`;
  }

  let propsKey = null;
  function renderProps(b) {
    // Rebuilt only when something it shows changed, not on every progress event (text stays selectable).
    const key = JSON.stringify([b.status, b.started_at, b.completed_at, b.parallel, b.priority, b.max_attempts]);
    if (key === propsKey) return;
    propsKey = key;
    const policy = b.failure_policy || {};
    const limits = [
      policy.max_failures !== null && policy.max_failures !== undefined ? `more than ${policy.max_failures} failed` : null,
      policy.max_failure_rate !== null && policy.max_failure_rate !== undefined
        ? `more than ${policy.max_failure_rate * 100}% failed` : null,
    ].filter(Boolean);
    const entries = [
      ["Processor", b.processor],
      ["Shared parameters", h("pre", {}, JSON.stringify(b.params || {}, null, 2))],
      ["Parallel jobs", fmtInt(b.parallel)],
      ["Priority", b.priority],
      ["Max attempts", fmtInt(b.max_attempts)],
      ["Stops when", limits.length ? limits.join(" or ") : "never (every item runs)"],
      ["Webhook", b.webhook ? `${b.webhook.url}${b.webhook.progress ? " (with progress)" : ""}` : "none"],
      ["Tags", (b.tags || []).length ? b.tags.join(", ") : "none"],
      ["Source", b.source || "inline items"],
      ["Tenant", b.tenant],
      ["Created", fmtDateTime(b.created_at)],
      ["Started", fmtDateTime(b.started_at)],
      ["Completed", fmtDateTime(b.completed_at)],
    ];
    clear(props).append(...entries.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  // -- the chart ----------------------------------------------------------------------------------------

  async function refreshChart() {
    chartAt = Date.now();
    try {
      const { points } = await get(`${path}/timeline`, null, { signal });
      drawChart(chart, points);
    } catch (err) {
      fail(err, "Could not load the chart");
    }
  }

  function chartSoon() {
    if (chartTimer) return;
    const wait = Math.max(0, chartAt + CHART_EVERY_MS - Date.now());
    chartTimer = setTimeout(() => { chartTimer = null; refreshChart(); }, wait);
  }

  // -- items --------------------------------------------------------------------------------------------

  const cursors = [0]; // the `after` of each page seen, so Previous can go back
  let page = 0;
  let nextAfter = null;

  function errorCell(item) {
    const err = item.error;
    if (!err) return h("td", { class: "truncate", title: compact(item.result, 2000) }, compact(item.result));
    const attempts = item.errors && item.errors.length ? item.errors : [err];
    return h("td", {},
      h("span", { class: "error" }, h("strong", {}, err.type), `: ${err.message}`),
      h("details", {},
        h("summary", {}, `Attempts and traceback (${attempts.length})`),
        h("ol", {}, attempts.map((e) => h("li", {},
          `${e.type}: ${e.message}`, e.at ? h("span", { class: "muted" }, ` · ${fmtDateTime(e.at)}`) : null,
          e.traceback ? h("pre", {}, e.traceback) : null)))));
  }

  async function loadItems() {
    itemsAt = Date.now();
    try {
      const list = await get(`${path}/items`, { status: itemStatus.value, after: cursors[page] || null,
        limit: ITEMS_PAGE }, { signal });
      nextAfter = list.next_after;
      clear(itemsBody).append(...list.items.map((item) => h("tr", { dataset: { status: item.status } },
        h("td", { class: "num" }, fmtInt(item.seq)),
        h("td", { class: "mono" }, item.item_id),
        h("td", {}, badge(item.status)),
        h("td", { class: "num" }, fmtInt(item.attempts)),
        h("td", { class: "num" }, item.duration_s === null ? "—" : fmtDuration(item.duration_s)),
        h("td", { class: "truncate", title: compact(item.payload, 2000) }, compact(item.payload)),
        errorCell(item))));
      itemsEmpty.hidden = list.items.length > 0;
      prev.disabled = page === 0;
      nextButton.disabled = nextAfter === null;
      const from = page * ITEMS_PAGE + 1;
      pageText.textContent = list.items.length ? `Items ${fmtInt(from)}–${fmtInt(from + list.items.length - 1)}` : "";
    } catch (err) {
      fail(err, "Could not load the items");
    }
  }

  function pageItems(step) {
    if (step > 0 && nextAfter !== null) {
      page += 1;
      cursors[page] = nextAfter;
    } else if (step < 0 && page > 0) {
      page -= 1;
    }
    loadItems();
  }

  itemStatus.addEventListener("change", () => {
    page = 0;
    cursors.length = 1;
    loadItems();
  });

  // While the batch runs the table refreshes itself, except while someone is using it (it would move).
  let itemsTimer = null;
  function itemsSoon() {
    if (itemsTimer) return;
    itemsTimer = setTimeout(() => {
      itemsTimer = null;
      if (itemsSection.contains(document.activeElement)) return;
      loadItems();
    }, Math.max(0, itemsAt + ITEMS_EVERY_MS - Date.now()));
  }

  // -- webhooks -----------------------------------------------------------------------------------------

  async function loadDeliveries() {
    try {
      const { deliveries: list } = await get(`${path}/webhooks`, null, { signal });
      clear(deliveries);
      if (!list.length) {
        deliveries.append(h("p", { class: "muted" },
          batch && batch.webhook ? "No delivery yet." : "This batch has no webhook."));
        return;
      }
      deliveries.append(h("div", { class: "table-wrap", role: "region", "aria-labelledby": "hooks-caption", tabindex: "0" },
        h("table", {},
          h("caption", { id: "hooks-caption", class: "sr-only" }, "Webhook deliveries, oldest first"),
          h("thead", {}, h("tr", {},
            h("th", { scope: "col" }, "Event"), h("th", { scope: "col" }, "Status"),
            h("th", { scope: "col", class: "num" }, "Attempts"), h("th", { scope: "col" }, "Last answer"),
            h("th", { scope: "col" }, "Created"))),
          h("tbody", {}, list.map((d) => {
            const last = d.attempts.at(-1);
            const answer = !last ? "—" : last.status_code ? `HTTP ${last.status_code}` : last.error || "no answer";
            return h("tr", {},
              h("td", { class: "mono" }, d.event), h("td", {}, d.status),
              h("td", { class: "num" }, fmtInt(d.attempts.length)), h("td", {}, answer),
              h("td", { class: "nowrap" }, fmtDateTime(d.created_at)));
          })))));
    } catch (err) {
      fail(err, "Could not load the webhook deliveries");
    }
  }

  // -- actions ------------------------------------------------------------------------------------------

  async function act(action) {
    problem.hidden = true;
    try {
      render(await post(`${path}/${action}`, undefined, { signal }));
      if (action === "start" || action === "resume" || action === "retry") watch();
    } catch (err) {
      fail(err, `Could not ${action} the batch`);
    }
  }

  async function cancel() {
    const ok = await confirmAction({
      title: "Cancel this batch?",
      text: `Pending items of ${batchId} are cancelled; items already running finish. This cannot be undone.`,
      confirm: "Cancel batch",
      keep: "Keep it running",
    });
    if (ok) await act("cancel");
  }

  async function save() {
    problem.hidden = true;
    const fmt = format.value;
    const errors = errorsOnly.checked;
    try {
      await download(`${path}/results`, { format: fmt, errors_only: errors ? "true" : null },
        `${batchId}${errors ? "-errors" : ""}.${fmt}`);
      announce("Download started.");
    } catch (err) {
      fail(err, "Could not download the results");
    }
  }

  // -- live ---------------------------------------------------------------------------------------------

  let watching = false;
  async function watch() {
    if (watching || signal.aborted) return;
    watching = true;
    try {
      while (!signal.aborted) {
        await follow(`${path}/events`, {
          signal,
          untilEnd: true,
          onEvent: ({ data }) => {
            if (!data || !data.batch) return;
            const was = batch && batch.status;
            render(data.batch);
            chartSoon();
            itemsSoon();
            if (was !== data.batch.status) loadDeliveries();
          },
        });
        // The stream ends after the final state; anything else was a dropped connection: follow again.
        if (!batch || FINAL.has(batch.status) || batch.status === "pending") break;
      }
    } catch (err) {
      fail(err, "Live updates stopped");
    } finally {
      watching = false;
      if (!signal.aborted) {
        refreshChart();
        loadItems();
      }
    }
  }

  const ticker = setInterval(() => {
    if (batch && batch.status === "running") {
      setText(counters.querySelector('[data-counter="ETA"] dd') || h("dd"), etaText(batch));
    }
  }, 5000);

  (async () => {
    try {
      render(await get(path, null, { signal }));
    } catch (err) {
      fail(err, err.status === 404 ? "No such batch" : "Could not load the batch");
      return;
    }
    refreshChart();
    loadItems();
    loadDeliveries();
    if (!FINAL.has(batch.status)) watch();
  })();

  return () => {
    abort.abort();
    clearInterval(ticker);
    if (chartTimer) clearTimeout(chartTimer);
    if (itemsTimer) clearTimeout(itemsTimer);
  };
}
