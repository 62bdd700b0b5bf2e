// The REST API from the page: the API key (kept in sessionStorage, sent as a bearer token), errors in the
// API's one shape, Server-Sent Events read with fetch() (EventSource cannot send an Authorization header),
// and downloads.
//
// URLs are relative to the page, so a dashboard served under a path prefix still finds its API.

const KEY_STORAGE = "batchyard.apiKey";
export const API = "api/v1";

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  document.dispatchEvent(new CustomEvent("batchyard:key"));
}

// Set by app.js: shows the key dialog and resolves once the user gave a key. Every request that met a 401
// while the dialog is open waits for the same answer, then retries with the new key.
let askForKey = null;
export function onKeyNeeded(fn) {
  askForKey = fn;
}

function url(path, query) {
  const u = new URL(`${API}${path}`, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) u.searchParams.append(k, String(one));
  }
  return u;
}

function headers(extra = {}) {
  const out = { ...extra };
  const key = getKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const err = body && body.error;
  if (err) return new ApiError(response.status, err.code, err.message, err.details);
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

// A 401 for the request sent with key `sent`. When the key changed while it was in flight (the user just
// gave one), the request is simply retried: clearing the key then would throw away the new one.
async function keyRejected(response, sent) {
  const err = await errorOf(response);
  if (!askForKey) throw err;
  if (getKey() !== sent) return;
  setKey(null);
  await askForKey(getKeyPromptMessage(err));
}

function getKeyPromptMessage(err) {
  return err.code === "invalid_api_key" ? "That API key was not accepted. Check it and try again." : "";
}

/** One API call. Resolves to the parsed JSON (null for 204), or the Response itself with raw: true. */
export async function request(path, { method = "GET", json, body, query, signal, raw = false } = {}) {
  for (;;) {
    const extra = {};
    let payload = body;
    if (json !== undefined) {
      extra["Content-Type"] = "application/json";
      payload = JSON.stringify(json);
    }
    const sent = getKey();
    const response = await fetch(url(path, query), { method, headers: headers(extra), body: payload, signal });
    if (response.status === 401) {
      await keyRejected(response, sent);
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    if (raw) return response;
    if (response.status === 204) return null;
    return response.json();
  }
}

export const get = (path, query, opts = {}) => request(path, { ...opts, query });
export const post = (path, json, opts = {}) => request(path, { ...opts, method: "POST", json });

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

/**
 * Follow an SSE stream until `signal` aborts: `onEvent({event, id, data})` for each event (data parsed as
 * JSON), `onStatus("live" | "reconnecting" | "ended")` as the connection changes. Reconnects with
 * Last-Event-ID after a drop. With `untilEnd`, a stream the server closed (a batch's, after its final
 * state) is not reopened. Rejects with ApiError on a 404 (the batch is gone).
 */
export async function follow(path, { onEvent, onStatus = () => {}, signal, untilEnd = false }) {
  let lastId = null;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = lastId;
      const sent = getKey();
      const response = await fetch(url(path), { headers: headers(extra), signal, cache: "no-store" });
      if (response.status === 401) {
        await keyRejected(response, sent);
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      onStatus("live");
      delay = 500;
      for await (const ev of parseEvents(response.body, signal)) {
        if (ev.id) lastId = ev.id;
        let data = ev.data;
        try {
          data = JSON.parse(ev.data);
        } catch {
          // keep the text
        }
        onEvent({ event: ev.event, id: ev.id, data });
      }
      if (untilEnd) {
        onStatus("ended");
        return;
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status !== 503 && err.status !== 502) throw err;
    }
    onStatus("reconnecting");
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
}

/** The events of an SSE body (the text/event-stream format: fields per line, a blank line ends one). */
async function* parseEvents(stream, signal) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  let buffer = "";
  let event = "message";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buffer);
      // A lone "\r" at the very end may be the first half of "\r\n": wait for the next chunk.
      if (!m || (m[0] === "\r" && m.index === buffer.length - 1)) break;
      const line = buffer.slice(0, m.index);
      buffer = buffer.slice(m.index + m[0].length);
      if (line === "") {
        if (data.length) yield { event, id, data: data.join("\n") };
        event = "message";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: the server's keep-alive ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") event = text;
      else if (field === "data") data.push(text);
      else if (field === "id") id = text;
    }
  }
}

/**
 * Save a download. Without a key the browser fetches the URL itself (streamed straight to disk); with one,
 * the file is fetched with the header and handed over as a blob.
 */
export async function download(path, query, filename) {
  const link = document.createElement("a");
  link.download = filename;
  let objectUrl = null;
  if (getKey()) {
    const response = await request(path, { query, raw: true });
    objectUrl = URL.createObjectURL(await response.blob());
    link.href = objectUrl;
  } else {
    link.href = url(path, query).toString();
  }
  document.body.append(link);
  link.click();
  link.remove();
  if (objectUrl) setTimeout(() => URL.revokeObjectURL(objectUrl), 60000);
}
