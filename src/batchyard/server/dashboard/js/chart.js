// The throughput chart: items per second in each time bucket of GET /batches/{id}/timeline, succeeded and
// failed stacked. Hand-drawn SVG (a few dozen lines do not need a charting library); a text summary and the
// numbers as a table go with it for whoever cannot see the picture.

import { clear, fmtClock, fmtDuration, fmtInt, fmtNum, h, nextId, s } from "./ui.js";

const W = 720;
const H = 220;
const M = { top: 12, right: 12, bottom: 30, left: 52 };

/** Round a maximum up to 1, 2 or 5 times a power of ten, so the axis reads cleanly. */
function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

export function drawChart(container, points) {
  clear(container);
  if (!points.length) {
    container.append(h("p", { class: "muted" }, "No item has finished yet."));
    return;
  }
  const seconds = points[0].seconds;
  const rows = points.map((p) => ({
    at: new Date(p.at), ok: p.succeeded / p.seconds, failed: p.failed / p.seconds,
    succeeded: p.succeeded, failedCount: p.failed,
  }));
  const top = niceMax(Math.max(...rows.map((r) => r.ok + r.failed)));
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const slot = plotW / rows.length;
  const y = (v) => M.top + plotH - (v / top) * plotH;

  const titleId = nextId("chart-title");
  const descId = nextId("chart-desc");
  const totalOk = points.reduce((n, p) => n + p.succeeded, 0);
  const totalFailed = points.reduce((n, p) => n + p.failed, 0);
  const peak = Math.max(...rows.map((r) => r.ok));
  const summary = `From ${fmtClock(rows[0].at)} to ${fmtClock(new Date(rows.at(-1).at.getTime() + seconds * 1000))} `
    + `in ${fmtDuration(seconds)} buckets: ${fmtInt(totalOk)} succeeded, ${fmtInt(totalFailed)} failed, `
    + `peak ${fmtNum(peak)} items/s.`;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": titleId, "aria-describedby": descId,
    dataset: { points: String(points.length) },
  },
  s("title", { id: titleId }, "Throughput and failures over time"));

  for (const v of [0, top / 2, top]) {
    svg.append(
      s("line", { class: v === 0 ? "axis" : "grid", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      s("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, fmtNum(v)),
    );
  }
  svg.append(s("text", { x: 12, y: M.top + plotH / 2, transform: `rotate(-90 12 ${M.top + plotH / 2})`,
    "text-anchor": "middle" }, "items/s"));

  const barW = Math.max(1, slot * 0.8);
  rows.forEach((r, i) => {
    const x = M.left + i * slot + (slot - barW) / 2;
    if (r.ok > 0) {
      svg.append(s("rect", { class: "bar-ok", x, width: barW, y: y(r.ok), height: y(0) - y(r.ok) }));
    }
    if (r.failed > 0) {
      svg.append(s("rect", { class: "bar-failed", x, width: barW, y: y(r.ok + r.failed), height: y(r.ok) - y(r.ok + r.failed) }));
    }
  });

  // Time labels: first, middle and last bucket (more would crowd a laptop screen).
  const marks = [...new Set([0, Math.floor((rows.length - 1) / 2), rows.length - 1])];
  for (const i of marks) {
    const anchor = marks.length > 1 && i === 0 ? "start" : i === rows.length - 1 && i !== 0 ? "end" : "middle";
    const x = anchor === "start" ? M.left : anchor === "end" ? W - M.right : M.left + (i + 0.5) * slot;
    svg.append(s("text", { x, y: H - 8, "text-anchor": anchor }, fmtClock(rows[i].at)));
  }

  const table = h("table", {},
    h("caption", { class: "sr-only" }, "Items finished per time bucket"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "From"), h("th", { scope: "col", class: "num" }, "Succeeded"),
      h("th", { scope: "col", class: "num" }, "Failed"), h("th", { scope: "col", class: "num" }, "Items/s"))),
    h("tbody", {}, rows.map((r) => h("tr", {},
      h("td", {}, fmtClock(r.at)), h("td", { class: "num" }, fmtInt(r.succeeded)),
      h("td", { class: "num" }, fmtInt(r.failedCount)), h("td", { class: "num" }, fmtNum(r.ok + r.failed))))));

  container.append(
    svg,
    h("div", { class: "legend", "aria-hidden": "true" },
      h("span", {}, h("span", { class: "swatch swatch-ok" }), "Succeeded"),
      h("span", {}, h("span", { class: "swatch swatch-failed" }), "Failed")),
    h("p", { class: "muted", id: descId }, summary),
    h("details", {}, h("summary", {}, "The numbers"), h("div", { class: "table-wrap" }, table)),
  );
}
