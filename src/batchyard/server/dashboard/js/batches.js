// The batch list: newest first, filtered by status and processor (by the API) and searched by description,
// tag or id (on the page), kept live by the server-wide event stream without reloading.

import { follow, get } from "./api.js";
import {
  BATCH_STATUSES,
  badge,
  clear,
  done,
  etaText,
  fmtCost,
  fmtDateTime,
  fmtInt,
  fmtRate,
  h,
  setText,
  statusText,
} from "./ui.js";

const PAGE = 50;

export function batchesView(main) {
  document.title = "Batches · batchyard";
  const abort = new AbortController();
  const rows = new Map(); // batch id -> {batch, tr, update}
  let next = null;

  const status = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "Any status"), BATCH_STATUSES.map((s) => h("option", { value: s }, s)));
  const processor = h("select", { id: "filter-processor", name: "processor" }, h("option", { value: "" }, "Any processor"));
  const search = h("input", { id: "filter-search", name: "q", type: "search", autocomplete: "off",
    "aria-describedby": "filter-search-hint" });
  const liveDot = h("span", { class: "live-dot", "aria-hidden": "true" });
  const liveText = h("span", {}, "Connecting…");
  const tbody = h("tbody");
  const empty = h("p", { class: "empty", hidden: true });
  const more = h("button", { type: "button", hidden: true, onclick: () => load(false) }, "Load older batches");
  const problem = h("div", { class: "alert", role: "alert", hidden: true });

  main.append(
    h("div", { class: "title-row" },
      h("h1", {}, "Batches"),
      h("p", { class: "muted", role: "status" }, liveDot, liveText)),
    h("form", { class: "filters", role: "search", "aria-label": "Filter batches", onsubmit: (e) => e.preventDefault() },
      h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), status),
      h("div", { class: "field" }, h("label", { for: "filter-processor" }, "Processor"), processor),
      h("div", { class: "field" },
        h("label", { for: "filter-search" }, "Search"),
        search,
        h("span", { id: "filter-search-hint", class: "hint" }, "Description, tag or batch id"))),
    problem,
    h("div", { class: "table-wrap", role: "region", "aria-labelledby": "batches-caption", tabindex: "0" },
      h("table", { id: "batches-table" },
        h("caption", { id: "batches-caption", class: "sr-only" }, "Batches, newest first"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Batch"),
          h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col" }, "Processor"),
          h("th", { scope: "col" }, "Progress"),
          h("th", { scope: "col", class: "num" }, "Done"),
          h("th", { scope: "col", class: "num" }, "Failed"),
          h("th", { scope: "col", class: "num" }, "Items/s"),
          h("th", { scope: "col" }, "ETA"),
          h("th", { scope: "col", class: "num" }, "Cost"),
          h("th", { scope: "col" }, "Created"))),
        tbody),
      empty),
    h("div", { class: "buttons" }, more),
  );

  function matches(b) {
    if (status.value && b.status !== status.value) return false;
    if (processor.value && b.processor !== processor.value) return false;
    const q = search.value.trim().toLowerCase();
    if (!q) return true;
    return [b.batch_id, b.description || "", ...(b.tags || [])].some((t) => t.toLowerCase().includes(q));
  }

  function refreshVisibility() {
    let shown = 0;
    for (const row of rows.values()) {
      row.tr.hidden = !matches(row.batch);
      if (!row.tr.hidden) shown += 1;
    }
    empty.hidden = shown > 0;
    if (!rows.size) clear(empty).append("No batches yet: ", h("a", { href: "#/new" }, "start one"), ".");
    else setText(empty, "No batch matches the filters.");
  }

  function makeRow(b) {
    const link = h("a", { href: `#/batches/${encodeURIComponent(b.batch_id)}` }, b.batch_id);
    const desc = h("div", { class: "cell-desc" });
    const statusCell = h("td");
    const bar = h("progress", { max: "100", "aria-label": `Progress of ${b.batch_id}` });
    const pct = h("span", { class: "pct" });
    const cells = {
      processor: h("td"), done: h("td", { class: "num" }), failed: h("td", { class: "num" }),
      rate: h("td", { class: "num" }), eta: h("td", { class: "nowrap" }), cost: h("td", { class: "num" }),
      created: h("td", { class: "nowrap" }),
    };
    const tr = h("tr", { dataset: { batchId: b.batch_id } },
      h("td", { class: "cell-id" }, link, desc), statusCell, cells.processor,
      h("td", { class: "progress-cell" }, bar, pct), cells.done, cells.failed, cells.rate, cells.eta, cells.cost,
      cells.created);
    const row = { batch: b, tr };
    row.update = (batch) => {
      row.batch = batch;
      const tags = (batch.tags || []).map((t) => h("span", { class: "tag" }, t));
      clear(desc).append(batch.description || "", " ", ...tags);
      const text = statusText(batch);
      if (statusCell.textContent !== text) clear(statusCell).append(badge(batch.status, text));
      setText(cells.processor, batch.processor);
      bar.value = batch.progress_percent;
      setText(pct, `${Math.floor(batch.progress_percent)}%`);
      setText(cells.done, `${fmtInt(done(batch))} / ${fmtInt(batch.items_total)}`);
      setText(cells.failed, fmtInt(batch.items_failed));
      setText(cells.rate, fmtRate(batch.throughput_per_s));
      setText(cells.eta, etaText(batch));
      setText(cells.cost, fmtCost(batch.cost_total, batch.cost_unit));
      setText(cells.created, fmtDateTime(batch.created_at));
      tr.hidden = !matches(batch);
    };
    row.update(b);
    return row;
  }

  function place(b) {
    const known = rows.get(b.batch_id);
    if (known) {
      known.update(b);
      return;
    }
    const row = makeRow(b);
    rows.set(b.batch_id, row);
    // Newest first: before the first row created earlier than this one
    const created = Date.parse(b.created_at);
    const after = [...rows.values()].find((r) => r !== row && Date.parse(r.batch.created_at) < created);
    if (after) tbody.insertBefore(row.tr, after.tr);
    else tbody.append(row.tr);
  }

  async function load(reset) {
    problem.hidden = true;
    try {
      const page = await get("/batches", {
        status: status.value, processor: processor.value, limit: PAGE, before: reset ? null : next,
      }, { signal: abort.signal });
      if (reset) {
        rows.clear();
        clear(tbody);
      }
      for (const b of page.batches) place(b);
      next = page.next_before;
      more.hidden = !next;
      refreshVisibility();
    } catch (err) {
      if (abort.signal.aborted) return;
      problem.hidden = false;
      problem.textContent = `Could not load batches: ${err.message}`;
    }
  }

  async function loadProcessors() {
    try {
      const { processors } = await get("/processors", null, { signal: abort.signal });
      for (const p of processors) processor.append(h("option", { value: p.name }, p.name));
    } catch {
      // the filter just offers fewer choices
    }
  }

  status.addEventListener("change", () => load(true));
  processor.addEventListener("change", () => load(true));
  search.addEventListener("input", refreshVisibility);

  // ETAs are relative ("in 2 min"): keep them current between events.
  const ticker = setInterval(() => {
    for (const row of rows.values()) setText(row.tr.children[7], etaText(row.batch));
  }, 5000);

  loadProcessors();
  load(true).then(() => follow("/events", {
    signal: abort.signal,
    onEvent: ({ data }) => {
      if (data && data.batch) {
        place(data.batch);
        refreshVisibility();
      }
    },
    onStatus: (state) => {
      liveDot.classList.toggle("on", state === "live");
      liveText.textContent = state === "live" ? "Live" : "Reconnecting…";
    },
  })).catch((err) => {
    if (abort.signal.aborted) return;
    liveText.textContent = `Live updates stopped: ${err.message}`;
  });

  return () => {
    abort.abort();
    clearInterval(ticker);
  };
}
