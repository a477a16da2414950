// Small DOM helpers. Text from voiced (transcripts, site ids, plugin errors) can be
// anything a microphone or an MQTT client sent: it only ever becomes text nodes and
// attribute values, never HTML.

/** An element: h("p", {class: "x", onclick: fn}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, ...children);
  return el;
}

/** Append children (strings become text; arrays are flattened; null is skipped). */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** "14:03:22" today, "3 Mar 14:03" before. */
export function clock(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  const now = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString([], { day: "numeric", month: "short" })} ${time}`;
}

export function ms(value) {
  if (value === null || value === undefined) return "";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

export function percent(value) {
  return value === null || value === undefined ? "" : `${Math.round(value * 100)}%`;
}

/** A level in dBFS as the width of a meter (-60 dBFS: empty, 0: full). */
export function levelWidth(dbfs) {
  if (dbfs === null || dbfs === undefined || !Number.isFinite(dbfs)) return "0%";
  return `${Math.max(0, Math.min(100, ((dbfs + 60) / 60) * 100)).toFixed(0)}%`;
}

export function meter(cls = "") {
  const bar = h("div", { class: "meter-bar" });
  return { el: h("div", { class: `meter ${cls}`, role: "meter", "aria-label": "audio level" }, bar),
           set(dbfs) {
             bar.style.width = levelWidth(dbfs);
             bar.classList.toggle("loud", dbfs > -12 && dbfs <= -3);
             bar.classList.toggle("clipping", dbfs > -3);
           } };
}

const WHY = {
  no_match: "no match",
  low_confidence: "low confidence",
  empty: "nothing heard",
  not_speech: "not speech",
};

/** What became of an utterance, and why, in a few words. */
export function outcomeText(outcome, detail) {
  if (!outcome) return "";
  switch (outcome) {
    case "handled": return "handled";
    case "not_recognized": return WHY[detail] || (detail ? `not recognized: ${detail}` : "not recognized");
    case "not_speech": return "not speech";
    case "no_handler": return "no handler";
    case "refused": return detail ? `refused: ${detail}` : "refused";
    case "error": return detail ? `error: ${detail}` : "error";
    case "timeout": return "timed out";
    case "confirming": return "waiting for confirmation";
    default: return detail ? `${outcome}: ${detail}` : outcome;
  }
}

export function outcomeBadge(outcome, detail) {
  const good = outcome === "handled" || outcome === "enrolled";
  const cls = good ? "ok" : outcome === "error" || outcome === "refused" ? "bad" : "meh";
  return h("span", { class: `badge ${cls} outcome`, dataset: { outcome: outcome || "" } },
           outcomeText(outcome, detail));
}

/** Slot values as "name=value" chips. */
export function slotChips(slots) {
  const entries = Object.entries(slots || {});
  if (!entries.length) return null;
  return h("span", { class: "slots" },
           entries.map(([k, v]) => h("span", { class: "chip", dataset: { slot: k } },
                                     `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)));
}

const STAGE_ORDER = ["ingest", "vad", "asr", "speaker", "nlu", "handler", "processing"];

/** Stage timings as a small horizontal bar chart (ms). */
export function timingChart(timings) {
  const entries = Object.entries(timings || {})
    .filter(([, v]) => typeof v === "number" && v >= 0)
    .sort(([a], [b]) => rank(a) - rank(b));
  if (!entries.length) return h("p", { class: "muted" }, "no timings");
  const max = Math.max(...entries.map(([, v]) => v), 1);
  return h("div", { class: "chart", role: "img",
                    "aria-label": entries.map(([k, v]) => `${k} ${ms(v)}`).join(", ") },
           entries.map(([stage, value]) => h("div", { class: "chart-row", dataset: { stage } },
             h("span", { class: "chart-label" }, stage),
             h("span", { class: "chart-track" },
               h("span", { class: `chart-bar stage-${stage}`,
                           style: { width: `${Math.max(1, (value / max) * 100)}%` } })),
             h("span", { class: "chart-value" }, ms(value)))));
}

function rank(stage) {
  const i = STAGE_ORDER.indexOf(stage);
  return i < 0 ? STAGE_ORDER.length : i;
}

/** A message line that says something went wrong (or null to clear). */
export function problem(el, error) {
  if (!error) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.textContent = error.message || String(error);
}
