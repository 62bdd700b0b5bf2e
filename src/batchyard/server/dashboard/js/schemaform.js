// A processor's parameter schema (pydantic's JSON schema, from GET /processors) as form fields for the
// batch's shared parameters. Every field may stay empty: a required parameter can come from a column of
// the file instead, and the server's validation report says what is missing.

import { h } from "./ui.js";

/** Resolve $ref / allOf / Optional (anyOf with null) into one plain schema. */
function normalize(prop, defs) {
  let p = { ...prop };
  for (let guard = 0; guard < 5; guard += 1) {
    if (p.$ref) {
      const name = p.$ref.split("/").pop();
      const { $ref, ...rest } = p;
      p = { ...(defs[name] || {}), ...rest };
    } else if (Array.isArray(p.allOf) && p.allOf.length === 1) {
      const { allOf, ...rest } = p;
      p = { ...allOf[0], ...rest };
    } else if (Array.isArray(p.anyOf)) {
      const options = p.anyOf.filter((o) => o.type !== "null");
      if (options.length !== 1) return { ...p, kind: "json" };
      const { anyOf, ...rest } = p;
      p = { ...options[0], ...rest };
    } else {
      break;
    }
  }
  if (Array.isArray(p.enum)) return { ...p, kind: "enum" };
  if (p.const !== undefined) return { ...p, kind: "enum", enum: [p.const] };
  if (p.type === "boolean") return { ...p, kind: "bool" };
  if (p.type === "integer") return { ...p, kind: "int" };
  if (p.type === "number") return { ...p, kind: "number" };
  if (p.type === "string") return { ...p, kind: "string" };
  if (p.type === "array" && p.items) {
    const item = normalize(p.items, defs);
    if (item.kind === "enum") return { ...p, kind: "multi", options: item.enum };
    if (["string", "int", "number"].includes(item.kind)) return { ...p, kind: "list", itemKind: item.kind };
  }
  return { ...p, kind: "json" };
}

function parseScalar(kind, text) {
  if (kind === "int" || kind === "number") {
    const n = Number(text);
    if (!Number.isFinite(n)) throw new Error(`${text} is not a number`);
    return n;
  }
  return text;
}

function describe(p, required) {
  const parts = [];
  if (p.description) parts.push(p.description);
  if (required) parts.push("Required: set it here or as a column of the file.");
  if (p.default !== undefined && p.default !== null && !(Array.isArray(p.default) && !p.default.length)) {
    parts.push(`Default: ${typeof p.default === "string" ? p.default : JSON.stringify(p.default)}.`);
  }
  if (p.kind === "list") parts.push("Separate values with commas.");
  if (p.kind === "json") parts.push("A JSON value.");
  return parts.join(" ");
}

/**
 * The fields for `schema`, and `read()` giving the object of the fields that were filled in (throws an
 * Error naming the field when one cannot be read). Returns null when the schema has no properties.
 */
export function schemaForm(schema) {
  const properties = schema && schema.properties;
  if (!properties || !Object.keys(properties).length) return null;
  const defs = schema.$defs || schema.definitions || {};
  const required = new Set(schema.required || []);
  const readers = [];
  const element = h("div", { class: "schema-form" });

  for (const [name, raw] of Object.entries(properties)) {
    const p = normalize(raw, defs);
    const id = `param-${name}`;
    const hintId = `${id}-hint`;
    const title = p.title || name;
    const hint = describe(p, required.has(name));
    const hintEl = hint ? h("span", { class: "hint", id: hintId }, hint) : null;
    const describedBy = hint ? hintId : null;
    let control;
    let read;

    if (p.kind === "multi") {
      const boxes = p.options.map((opt, i) => h("input", { type: "checkbox", value: String(opt), id: `${id}-${i}` }));
      element.append(h("fieldset", { "aria-describedby": describedBy },
        h("legend", {}, title),
        h("div", { class: "checks" }, p.options.map((opt, i) => h("label", { class: "check", for: `${id}-${i}` },
          boxes[i], String(opt)))),
        hintEl));
      readers.push(() => {
        const picked = p.options.filter((_, i) => boxes[i].checked);
        return picked.length ? [name, picked] : null;
      });
      continue;
    }

    if (p.kind === "enum" || p.kind === "bool") {
      const options = p.kind === "bool" ? [true, false] : p.enum;
      control = h("select", { id, name, "aria-describedby": describedBy },
        h("option", { value: "" }, "(not set)"),
        options.map((opt, i) => h("option", { value: String(i) }, String(opt))));
      read = () => (control.value === "" ? null : [name, options[Number(control.value)]]);
    } else if (p.kind === "int" || p.kind === "number") {
      const min = p.minimum ?? p.exclusiveMinimum;
      const max = p.maximum ?? p.exclusiveMaximum;
      control = h("input", { id, name, type: "number", step: p.kind === "int" ? "1" : "any", min, max,
        "aria-describedby": describedBy });
      read = () => (control.value === "" ? null : [name, parseScalar(p.kind, control.value)]);
    } else if (p.kind === "list") {
      control = h("input", { id, name, type: "text", autocomplete: "off", "aria-describedby": describedBy });
      read = () => {
        const parts = control.value.split(",").map((t) => t.trim()).filter(Boolean);
        return parts.length ? [name, parts.map((t) => parseScalar(p.itemKind, t))] : null;
      };
    } else if (p.kind === "json") {
      control = h("textarea", { id, name, rows: "2", spellcheck: "false", "aria-describedby": describedBy });
      read = () => {
        if (!control.value.trim()) return null;
        try {
          return [name, JSON.parse(control.value)];
        } catch {
          throw new Error(`${title}: not valid JSON`);
        }
      };
    } else {
      control = h("input", { id, name, type: "text", autocomplete: "off", "aria-describedby": describedBy });
      read = () => (control.value === "" ? null : [name, control.value]);
    }
    element.append(h("div", { class: "field" }, h("label", { for: id }, title), control, hintEl));
    readers.push(() => {
      try {
        return read();
      } catch (err) {
        throw new Error(err.message.startsWith(title) ? err.message : `${title}: ${err.message}`);
      }
    });
  }

  return {
    element,
    read: () => Object.fromEntries(readers.map((r) => r()).filter(Boolean)),
  };
}
