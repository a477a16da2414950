// Status: version, models, intents, handlers and plugins with their state, health, and
// the errors voiced reported since this page opened (/api/status, /api/events).
import { api } from "./api.js";
import { h, $, fill, clock, problem } from "./ui.js";

const KEEP_ERRORS = 20;

function table(headers, rows, cls) {
  return h("table", { class: `grid ${cls}` },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none"))));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
}

function uptime(seconds) {
  const s = Math.floor(seconds || 0);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d} d ${hr} h` : hr ? `${hr} h ${m} min` : `${m} min ${s % 60} s`;
}

export class StatusView {
  constructor(root, events) {
    this.root = root;
    this.out = $("#status-body", root);
    this.errorsEl = $("#status-errors", root);
    this.problemLine = $("#status-problem", root);
    this.errors = [];
    this.visible = false;
    $("#reload", root).addEventListener("click", () => this.reload());
    events.on((msg) => {
      if (msg.type === "error") this.error(msg);
      if (msg.type === "status" && this.visible) this.load();
    });
  }

  error(msg) {
    this.errors.unshift(msg);
    this.errors.length = Math.min(this.errors.length, KEEP_ERRORS);
    fill(this.errorsEl, this.errors.map((m) => h("li", {},
      h("time", { class: "time" }, clock(m.time)), " ",
      m.site ? h("span", { class: "badge" }, m.site) : null, " ",
      h("code", {}, `${m.data.component}/${m.data.code}`), " ", m.data.message)));
  }

  async load() {
    let s;
    try {
      s = await api("/api/status");
      problem(this.problemLine, null);
    } catch (err) {
      problem(this.problemLine, err);
      return;
    }
    const m = s.models || {};
    const asr = m.asr || {};
    const spk = m.speakers || {};
    const vad = m.vad || {};
    const intents = s.intents || {};
    const health = s.health || {};
    fill(this.out,
      h("div", { class: "panel" }, h("h2", {}, "voiced"), facts([
        ["version", s.version], ["state", s.state], ["up", uptime(s.uptime_s)],
        ["MQTT", s.mqtt ? (s.mqtt.connected ? "connected" : "not connected") : ""],
        ["web access", s.http ? s.http.auth : ""], ["utterances", s.processed],
        ["in flight", s.inflight], ["rejected", s.rejected]])),
      h("div", { class: "panel" }, h("h2", {}, "Models"), facts([
        ["speech recognition", [asr.backend, asr.model || asr.mode, asr.language, asr.device].filter(Boolean).join(" · ")],
        ["speakers", [spk.backend, spk.model].filter(Boolean).join(" · ")],
        ["voice detection", `${vad.backend} · aggressiveness ${vad.aggressiveness} · ${vad.end_silence_ms} ms silence ends speech`]])),
      h("div", { class: "panel" }, h("h2", {}, "Intents"), facts([
        ["intents", intents.count], ["languages", (intents.languages || []).join(", ")],
        ["files", (intents.paths || []).join(", ")], ["reloads", intents.reloads],
        ["last reload failed", intents.reload_error]])),
      h("div", { class: "panel wide" }, h("h2", {}, "Handlers"), table(["intent", "plugin", "status"],
        (s.handlers || []).map((x) => h("tr", { class: x.ok ? "" : "failed" }, h("td", {}, x.intent), h("td", {}, x.plugin),
          h("td", {}, x.ok ? h("span", { class: "badge ok" }, "ok")
            : [h("span", { class: "badge bad" }, "disabled"), h("div", { class: "bad-text small" }, x.error || "")]))),
        "handlers")),
      h("div", { class: "panel wide" }, h("h2", {}, "Plugins"), table(["plugin", "state", "error"],
        (s.plugins || []).map((p) => h("tr", {}, h("td", {}, p.name),
          h("td", {}, h("span", { class: `badge ${p.state === "running" || p.state === "loaded" ? "ok" : "bad"}` }, p.state)),
          h("td", { class: "bad-text small" }, p.error || ""))), "plugins")),
      h("div", { class: "panel" }, h("h2", {}, "Health"), facts([
        ["event loop lag", `${health.loop_lag_ms} ms (worst ${health.loop_lag_max_ms} ms)`],
        ["overloaded", health.overloaded ? "yes" : "no"], ["sites behind", health.sites_behind],
        ["broker dropped", health.broker_dropped]])));
  }

  async reload() {
    const out = $("#reload-result", this.root);
    fill(out, "Reloading…");
    try {
      const r = await api("/api/reload", { method: "POST" });
      fill(out, `Reloaded: ${r.intents} intents, ${r.handlers} handlers.`);
    } catch (err) {
      fill(out, h("span", { class: "bad-text" }, err.message));
    }
    this.load();
  }
}
