// New batch: pick a processor (its parameter schema becomes the shared-parameters form), choose or drop a
// CSV / JSONL / JSON / text file, read the server's validation report (an upload with dry_run, which
// creates nothing), then start. Start stays disabled until the report for exactly these inputs is valid.

import { ApiError, get, request } from "./api.js";
import { announce, clear, fmtCost, fmtInt, h } from "./ui.js";
import { schemaForm } from "./schemaform.js";

const ACCEPT = ".csv,.tsv,.jsonl,.ndjson,.json,.txt,.gz,.bz2,.xz,.zst,text/csv,application/json,text/plain";
const MAX_PROBLEMS_SHOWN = 50;

function field(id, label, control, hint) {
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), control,
    hint ? h("span", { class: "hint", id: hintId }, hint) : null);
}

function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} kB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function newBatchView(main) {
  document.title = "New batch · batchyard";
  const abort = new AbortController();
  let processors = [];
  let params = null; // the schema form of the chosen processor, or null (then a JSON textarea)
  let checkedStamp = null; // the inputs the last valid report was for
  let timer = null;
  let checking = 0;

  const processor = h("select", { id: "processor", name: "processor", required: true });
  const processorInfo = h("p", { class: "muted", id: "processor-info" });
  const paramsBox = h("div");
  const paramsJson = h("textarea", { id: "params-json", rows: "3", spellcheck: "false" });
  const fileInput = h("input", { type: "file", id: "file-input", name: "file", accept: ACCEPT, required: true });
  const fileText = h("p", { class: "muted", id: "file-chosen" }, "No file chosen yet.");
  const format = h("select", { id: "input-format" },
    h("option", { value: "" }, "From the file name"), h("option", { value: "csv" }, "CSV"),
    h("option", { value: "jsonl" }, "JSONL (one JSON value per line)"), h("option", { value: "json" }, "JSON array"),
    h("option", { value: "text" }, "Text (one item per line)"));
  const report = h("div", { id: "validation-report", class: "report", role: "status", "aria-live": "polite" });
  const parallel = h("input", { type: "number", id: "parallel-jobs", min: "1", max: "100000", step: "1", value: "8",
    required: true });
  const priority = h("select", { id: "priority" }, h("option", { value: "high" }, "High"),
    h("option", { value: "normal", selected: true }, "Normal"), h("option", { value: "low" }, "Low"));
  const maxAttempts = h("input", { type: "number", id: "max-attempts", min: "1", max: "1000", step: "1" });
  const description = h("input", { type: "text", id: "description", maxlength: "10000" });
  const tags = h("input", { type: "text", id: "tags", autocomplete: "off" });
  const webhook = h("input", { type: "url", id: "webhook-url", placeholder: "https://", autocomplete: "off" });
  const webhookProgress = h("input", { type: "checkbox", id: "webhook-progress" });
  const startNow = h("input", { type: "checkbox", id: "start-now", checked: true });
  const checkButton = h("button", { type: "button", id: "check" }, "Check the file");
  const startButton = h("button", { type: "submit", id: "start", class: "primary", disabled: true,
    "aria-describedby": "start-hint" }, "Start batch");
  const startHint = h("span", { id: "start-hint", class: "muted" }, "Choose a file: it is checked before starting.");
  const problem = h("div", { class: "alert", role: "alert", hidden: true });

  const dropzone = h("div", { class: "dropzone", id: "dropzone" },
    field("file-input", "Input file", fileInput, "CSV, JSONL, JSON or text (optionally compressed). You can also drop a file on this box."),
    fileText,
    field("input-format", "Format", format));

  const form = h("form", { id: "new-batch", class: "grid-2", novalidate: true },
    h("div", {},
      h("fieldset", {},
        h("legend", {}, "Processor"),
        field("processor", "Processor", processor),
        processorInfo),
      h("fieldset", {},
        h("legend", {}, "Shared parameters"),
        h("p", { class: "muted" }, "Every item gets these; a column of the same name in the file overrides them for its row."),
        paramsBox)),
    h("div", {},
      h("fieldset", {},
        h("legend", {}, "Items"),
        dropzone,
        report),
      h("fieldset", {},
      h("legend", {}, "How it runs"),
      h("div", { class: "field-row" },
        field("parallel-jobs", "Parallel jobs", parallel),
        field("priority", "Priority", priority),
        field("max-attempts", "Max attempts", maxAttempts, "Empty: the processor's own")),
      field("description", "Batch description", description, "Shown in the batch list, and searchable there"),
      field("tags", "Batch tags", tags, "Separate tags with commas"),
      field("webhook-url", "Webhook URL", webhook, "Receives signed POSTs when the batch ends"),
      h("label", { class: "check", for: "webhook-progress" }, webhookProgress, "Also send progress events to the webhook"),
      h("label", { class: "check", for: "start-now" }, startNow, "Start at once (otherwise the batch waits for Start)")),
      problem,
      h("div", { class: "buttons" }, checkButton, startButton, startHint)),
  );

  main.append(h("h1", {}, "New batch"), form);

  // -- the processor and its parameters -------------------------------------------------------------

  function chosen() {
    return processors.find((p) => p.name === processor.value);
  }

  function showProcessor() {
    const p = chosen();
    clear(paramsBox);
    if (!p) return;
    const bits = [p.description || "No description."];
    if (p.cost_per_item) bits.push(`Costs ${fmtCost(p.cost_per_item, p.cost_unit)} per item.`);
    if (p.rate_limit) bits.push(`Rate limit ${p.rate_limit}.`);
    processorInfo.textContent = bits.join(" ");
    params = schemaForm(p.params_schema);
    if (params) {
      paramsBox.append(params.element);
    } else {
      paramsJson.value = "";
      paramsBox.append(field("params-json", "Shared parameters (JSON object)", paramsJson,
        "This processor declares no parameter model: any JSON object, e.g. {\"ms\": 100}. Empty for none."));
    }
  }

  function readParams() {
    if (params) return params.read();
    const text = paramsJson.value.trim();
    if (!text) return {};
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      throw new Error("Shared parameters: not valid JSON");
    }
    if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error("Shared parameters: expected a JSON object");
    return value;
  }

  // -- validation -----------------------------------------------------------------------------------

  function file() {
    return fileInput.files && fileInput.files[0];
  }

  function stamp(shared) {
    const f = file();
    return JSON.stringify([processor.value, shared, format.value, f && [f.name, f.size, f.lastModified]]);
  }

  function formData(shared, dryRun) {
    const f = file();
    const data = new FormData();
    data.append("file", f, f.name);
    data.append("processor", processor.value);
    data.append("params", JSON.stringify(shared));
    if (format.value) data.append("input_format", format.value);
    data.append("dry_run", dryRun ? "true" : "false");
    if (!dryRun) {
      data.append("parallel_jobs", parallel.value || "8");
      data.append("priority", priority.value);
      if (maxAttempts.value) data.append("max_attempts", maxAttempts.value);
      if (description.value.trim()) data.append("description", description.value.trim());
      if (tags.value.trim()) data.append("tags", tags.value.trim());
      if (webhook.value.trim()) {
        data.append("webhook_url", webhook.value.trim());
        data.append("webhook_progress", webhookProgress.checked ? "true" : "false");
      }
      data.append("start", startNow.checked ? "true" : "false");
    }
    return data;
  }

  function problemList(problems) {
    const shown = problems.slice(0, MAX_PROBLEMS_SHOWN);
    return h("ul", {}, shown.map((p) => h("li", {},
      [p.line ? `Line ${p.line}` : null, p.column ? `column ${p.column}` : null].filter(Boolean).join(", ") || "Input",
      `: ${p.reason}`)),
    problems.length > shown.length ? h("li", {}, `… and ${problems.length - shown.length} more`) : null);
  }

  function showReport(kind, ...content) {
    report.className = `report ${kind}`;
    clear(report).append(...content);
  }

  function updateStart() {
    let current = null;
    try {
      current = stamp(readParams());
    } catch {
      current = null;
    }
    const ready = current !== null && current === checkedStamp;
    startButton.disabled = !ready;
    startHint.textContent = ready ? "The file was checked: ready to start."
      : file() ? "Check the file before starting." : "Choose a file: it is checked before starting.";
  }

  async function check() {
    clearTimeout(timer);
    problem.hidden = true;
    const f = file();
    if (!f || !processor.value) {
      updateStart();
      return;
    }
    let shared;
    try {
      shared = readParams();
    } catch (err) {
      showReport("bad", h("p", {}, err.message));
      updateStart();
      return;
    }
    const mine = ++checking;
    const forStamp = stamp(shared);
    showReport("", h("p", {}, `Checking ${f.name}…`));
    try {
      const result = await request("/batches/upload", { method: "POST", body: formData(shared, true), signal: abort.signal });
      if (mine !== checking) return; // a newer check started meanwhile
      if (result.valid) {
        checkedStamp = forStamp;
        const cost = result.estimated_cost ? ` Estimated cost: ${fmtCost(result.estimated_cost, result.cost_unit)}.` : "";
        const items = result.items === 1 ? "1 item is" : `${fmtInt(result.items)} items are`;
        showReport("ok", h("p", {}, h("strong", {}, "Valid: "), `${items} ready to run.${cost}`));
      } else {
        checkedStamp = null;
        showReport("bad", h("p", {}, h("strong", {}, "Not valid: "),
          `${fmtInt(result.problems.length)} problem${result.problems.length === 1 ? "" : "s"} `
          + `(${fmtInt(result.items)} valid item${result.items === 1 ? "" : "s"} read).`), problemList(result.problems));
      }
    } catch (err) {
      if (abort.signal.aborted || mine !== checking) return;
      checkedStamp = null;
      const problems = err instanceof ApiError && Array.isArray(err.details) ? err.details : [];
      showReport("bad", h("p", {}, h("strong", {}, "Not valid: "), err.message), problems.length ? problemList(problems) : null);
    }
    updateStart();
  }

  function checkSoon() {
    checkedStamp = null;
    updateStart();
    clearTimeout(timer);
    if (file()) {
      showReport("", h("p", {}, "Checking the file…")); // the previous report no longer applies
      timer = setTimeout(check, 400);
    }
  }

  // -- events ---------------------------------------------------------------------------------------

  processor.addEventListener("change", () => {
    showProcessor();
    checkSoon();
  });
  paramsBox.addEventListener("change", checkSoon);
  paramsBox.addEventListener("input", checkSoon); // debounced: the check starts once typing pauses
  format.addEventListener("change", checkSoon);
  fileInput.addEventListener("change", () => {
    const f = file();
    fileText.textContent = f ? `Chosen: ${f.name} (${sizeText(f.size)})` : "No file chosen yet.";
    checkSoon();
  });
  checkButton.addEventListener("click", check);

  dropzone.addEventListener("dragover", (e) => {
    e.preventDefault();
    dropzone.classList.add("over");
  });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    dropzone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) {
      fileInput.files = e.dataTransfer.files;
      fileInput.dispatchEvent(new Event("change"));
    }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    problem.hidden = true;
    if (!parallel.checkValidity() || !maxAttempts.checkValidity() || !webhook.checkValidity()) {
      problem.hidden = false;
      problem.textContent = "Some options are not valid: parallel jobs and max attempts are whole numbers, "
        + "the webhook an http(s) URL.";
      return;
    }
    let shared;
    try {
      shared = readParams();
    } catch (err) {
      problem.hidden = false;
      problem.textContent = err.message;
      return;
    }
    if (stamp(shared) !== checkedStamp) {
      await check();
      return;
    }
    startButton.disabled = true;
    startHint.textContent = "Starting…";
    try {
      const batch = await request("/batches/upload", { method: "POST", body: formData(shared, false), signal: abort.signal });
      announce(`Batch ${batch.batch_id} created.`);
      location.hash = `#/batches/${encodeURIComponent(batch.batch_id)}`;
    } catch (err) {
      if (abort.signal.aborted) return;
      problem.hidden = false;
      problem.textContent = `Could not start the batch: ${err.message}`;
      updateStart();
    }
  });

  (async () => {
    try {
      ({ processors } = await get("/processors", null, { signal: abort.signal }));
    } catch (err) {
      if (abort.signal.aborted) return;
      problem.hidden = false;
      problem.textContent = `Could not load the processors: ${err.message}`;
      return;
    }
    processor.append(...processors.map((p) => h("option", { value: p.name }, p.name)));
    showProcessor();
    updateStart();
  })();

  return () => {
    abort.abort();
    clearTimeout(timer);
  };
}
