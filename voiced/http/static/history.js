// History: every utterance voiced kept, searchable (/api/history), each with its audio
// (/api/history/{id}/audio), stage timings as a bar chart, and its outcome and why.
import { api } from "./api.js";
import { h, $, fill, clock, ms, percent, outcomeBadge, slotChips, timingChart, problem } from "./ui.js";

const PAGE = 25;
const OUTCOMES = ["handled", "not_recognized", "not_speech", "no_handler", "refused", "error",
                  "timeout", "confirming", "enrolling", "enrolled"];

export class HistoryView {
  constructor(root) {
    this.root = root;
    this.form = $("#history-form", root);
    this.body = $("#history-rows", root);
    this.pager = $("#history-pager", root);
    this.problemLine = $("#history-problem", root);
    this.offset = 0;
    const select = this.form.elements.outcome;
    for (const o of OUTCOMES) select.append(h("option", { value: o }, o.replace("_", " ")));
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.offset = 0; this.load(); });
    this.form.addEventListener("change", () => { this.offset = 0; this.load(); });
    $("#history-prev", root).addEventListener("click", () => { this.offset = Math.max(0, this.offset - PAGE); this.load(); });
    $("#history-next", root).addEventListener("click", () => { this.offset += PAGE; this.load(); });
  }

  /** A new utterance was recorded: show it when the first page is open and untouched. */
  changed() {
    if (this.offset !== 0 || this.body.querySelector(".history-detail")) return;
    clearTimeout(this.pending);
    this.pending = setTimeout(() => this.load(), 500);
  }

  query() {
    const f = this.form.elements;
    // local date-times from the inputs, sent as epoch seconds
    const epoch = (input) => (input.value ? (new Date(input.value).getTime() / 1000).toFixed(0) : null);
    return { q: f.q.value.trim(), site: f.site.value.trim(), intent: f.intent.value.trim(),
             speaker: f.speaker.value.trim(), outcome: f.outcome.value,
             since: epoch(f.since), until: epoch(f.until), limit: PAGE, offset: this.offset };
  }

  async load() {
    problem(this.problemLine, null);
    let page;
    try {
      page = await api("/api/history", { query: this.query() });
    } catch (err) {
      problem(this.problemLine, err);
      return;
    }
    fill(this.body, page.items.length ? page.items.map((item) => this.row(item))
      : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "Nothing in the history matches.")));
    const last = Math.min(page.offset + page.items.length, page.total);
    fill($("#history-count", this.root), page.total ? `${page.offset + 1}–${last} of ${page.total}` : "none");
    $("#history-prev", this.root).disabled = page.offset === 0;
    $("#history-next", this.root).disabled = last >= page.total;
  }

  row(item) {
    const total = item.timings && item.timings.processing;
    const tr = h("tr", { class: "history-row", dataset: { id: item.id }, tabindex: 0, "aria-expanded": "false" },
      h("td", { class: "col-when" }, clock(item.started_at)),
      h("td", { class: "col-site" }, item.site),
      h("td", { class: "col-text" }, item.text || h("span", { class: "muted" }, "(nothing)")),
      h("td", { class: "col-intent" }, item.intent ? h("span", { class: "intent" }, item.intent) : null, slotChips(item.slots)),
      h("td", { class: "col-who" }, item.speaker && item.speaker !== "unknown" ? item.speaker : ""),
      h("td", { class: "col-outcome" }, outcomeBadge(item.outcome, item.detail),
        total ? h("span", { class: "muted small" }, ` ${ms(total)}`) : null,
        item.audio ? h("span", { class: "has-audio", title: "audio kept" }, " ♪") : null));
    const toggle = () => this.toggle(tr, item);
    tr.addEventListener("click", toggle);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); } });
    return tr;
  }

  toggle(tr, item) {
    const open = tr.nextElementSibling && tr.nextElementSibling.classList.contains("history-detail");
    if (open) {
      tr.nextElementSibling.remove();
      tr.setAttribute("aria-expanded", "false");
      return;
    }
    tr.setAttribute("aria-expanded", "true");
    tr.after(h("tr", { class: "history-detail", dataset: { id: item.id } },
      h("td", { colspan: 6 }, this.detail(item))));
  }

  /** "That's wrong": the utterance goes to the review queue (/api/review). */
  wrongButton(item) {
    const said = h("span", { class: "muted small wrong-result", "aria-live": "polite" });
    const button = h("button", { type: "button", class: "wrong" }, "That's wrong");
    button.addEventListener("click", async (e) => {
      e.stopPropagation();
      button.disabled = true;
      try {
        await api("/api/review", { method: "POST", json: { utterance: item.id } });
        fill(said, " In the review queue: ", h("a", { href: "#review" }, "correct it"));
      } catch (err) {
        button.disabled = false;
        fill(said, ` ${err.message}`);
      }
    });
    return h("p", {}, button, said);
  }

  detail(item) {
    const facts = [
      ["session", item.session_id],
      ["confidence", percent(item.confidence)],
      ["language", item.language],
      ["speaker", item.speaker ? `${item.speaker}${item.speaker_confidence ? ` (${percent(item.speaker_confidence)})` : ""}` : ""],
      ["ended by", item.end_reason],
      ["outcome", item.outcome],
      ["why", item.detail],
    ].filter(([, v]) => v);
    return h("div", { class: "detail-grid" },
      h("div", {},
        item.audio
          ? h("audio", { class: "utterance-audio", controls: true, preload: "metadata", src: item.audio })
          : h("p", { class: "muted" }, "No audio kept (history.keep_audio is off, or it was typed)."),
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        item.audio ? this.wrongButton(item) : null),
      h("div", {}, h("h4", {}, "Stage timings"), timingChart(item.timings)));
  }
}
