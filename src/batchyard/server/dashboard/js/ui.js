// DOM building and formatting. Text always goes in as text nodes (never innerHTML): payloads, results and
// error messages come from callers and must never be read as markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("button", {type: "button", onclick: fn}, "Pause"). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same signature. */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

let uid = 0;
/** A unique id for label/aria references. */
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** Say something to screen readers, politely, once. */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh text node after a tick makes screen readers read a repeated message again.
  setTimeout(() => { region.textContent = message; }, 50);
}

// -- formatting ---------------------------------------------------------------------------------------

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });

export const fmtInt = (n) => (n === null || n === undefined ? "—" : integer.format(n));
export const fmtNum = (n) => (n === null || n === undefined ? "—" : decimal.format(n));
export const fmtRate = (n) => (n === null || n === undefined ? "—" : `${decimal.format(n)}/s`);
export const fmtDateTime = (iso) => (iso ? dateTime.format(new Date(iso)) : "—");
export const fmtClock = (date) => clock.format(date);

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 10) return `${decimal.format(s)} s`;
  const total = Math.round(s);
  const d = Math.floor(total / 86400);
  const hrs = Math.floor((total % 86400) / 3600);
  const min = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (d) return `${d} d ${hrs} h`;
  if (hrs) return `${hrs} h ${min} min`;
  if (min) return `${min} min ${sec} s`;
  return `${sec} s`;
}

/** "in 2 min 5 s" or "3 min 10 s ago". */
export function fmtRelative(iso, now = Date.now()) {
  if (!iso) return "—";
  const delta = (new Date(iso).getTime() - now) / 1000;
  if (Math.abs(delta) < 1) return "now";
  return delta > 0 ? `in ${fmtDuration(delta)}` : `${fmtDuration(-delta)} ago`;
}

export function fmtCost(amount, unit) {
  if (!amount) return "—";
  const digits = amount < 1 ? 4 : 2;
  return `${amount.toFixed(digits).replace(/\.?0+$/, "")} ${unit || ""}`.trim();
}

/** A compact one-line JSON for tables (the full text goes in a title or a details element). */
export function compact(value, max = 120) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// -- batch vocabulary --------------------------------------------------------------------------------

export const BATCH_STATUSES = ["pending", "running", "paused", "cancelling", "completed", "failed", "cancelled"];
export const ITEM_STATUSES = ["pending", "running", "succeeded", "failed", "cancelled"];
export const FINAL = new Set(["completed", "failed", "cancelled"]);

export function statusText(batch) {
  if (batch.status === "paused" && batch.pause_reason) return `paused (${batch.pause_reason.replace(/_/g, " ")})`;
  return batch.status;
}

export function badge(status, text = status) {
  return h("span", { class: `badge badge-${status}` }, text);
}

export function done(batch) {
  return batch.items_succeeded + batch.items_failed + batch.items_cancelled;
}

/** The batch's ETA as text: relative while it runs, the completion time once final. */
export function etaText(batch, now = Date.now()) {
  if (FINAL.has(batch.status)) return batch.completed_at ? "done" : "—";
  if (batch.status !== "running" || !batch.estimated_completion) return "—";
  return fmtRelative(batch.estimated_completion, now);
}

export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/**
 * Ask before doing something that cannot be undone, in the page's native modal <dialog> (focus moves into
 * it, Escape closes it, focus returns to the button that opened it). Resolves true when confirmed.
 */
export function confirmAction({ title, text, confirm, keep }) {
  const dialog = document.getElementById("confirm-dialog");
  const opener = document.activeElement;
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = confirm;
  document.getElementById("confirm-keep").textContent = keep;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === "confirm");
    }, { once: true });
  });
}
