// The dashboard's shell: the hash router (#/, #/batches/<id>, #/new), the API key dialog, and focus
// management between views (the new view's heading takes focus, so screen readers hear the page change).

import { getKey, onKeyNeeded, setKey } from "./api.js";
import { batchView } from "./batch.js";
import { batchesView } from "./batches.js";
import { newBatchView } from "./newbatch.js";
import { clear } from "./ui.js";

const main = document.getElementById("main");
let leave = null; // the current view's clean-up: aborts its streams and timers
let first = true;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const batch = /^\/batches\/([^/?]+)/.exec(hash);
  if (batch) return { name: "batch", view: batchView, params: { batchId: decodeURIComponent(batch[1]) } };
  if (hash.startsWith("/new")) return { name: "new", view: newBatchView, params: {} };
  return { name: "batches", view: batchesView, params: {} };
}

function render() {
  if (leave) leave();
  leave = null;
  const r = route();
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === r.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  leave = r.view(main, r.params) || null;
  if (!first) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }
  first = false;
}

// -- the API key ---------------------------------------------------------------------------------------

const dialog = document.getElementById("key-dialog");
const form = document.getElementById("key-form");
const input = document.getElementById("key-input");
const error = document.getElementById("key-error");
const forget = document.getElementById("forget-key");
let waiting = null; // {promise, resolve} while the dialog is open

function askForKey(message) {
  if (!waiting) {
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    waiting = { promise, resolve };
    input.value = "";
    if (!dialog.open) dialog.showModal();
    input.focus();
  }
  error.hidden = !message;
  error.textContent = message || "";
  return waiting.promise;
}

form.addEventListener("submit", (event) => {
  const key = input.value.trim();
  if (!key) {
    event.preventDefault();
    return;
  }
  setKey(key);
  const w = waiting;
  waiting = null;
  w?.resolve();
});

// Nothing works without a key: Escape does not dismiss the dialog, the only way out is to give one.
dialog.addEventListener("cancel", (event) => event.preventDefault());

forget.addEventListener("click", () => {
  setKey(null);
  location.reload();
});

function showForget() {
  forget.hidden = !getKey();
}

onKeyNeeded(askForKey);
document.addEventListener("batchyard:key", showForget);
showForget();

window.addEventListener("hashchange", render);
render();
