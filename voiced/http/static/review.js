// Review: what voiced did not get right (/api/review). Play each one, fix the text, pick
// the intended intent and slots (or "not a command"), or discard; then accept or reject
// what the corrections teach (/api/review/proposals). Keyboard: j/k or ↓/↑ move, p plays,
// Enter saves (in a field too), n toggles "not a command", d discards, Esc leaves a field.
import { api } from "./api.js";
import { h, $, fill, clock, percent, outcomeBadge, slotChips, problem } from "./ui.js";

const NAME_KEY = "voiced.review.by";
const REASONS = {
  no_match: "not understood", empty: "nothing recognized", low_confidence: "low confidence",
  refused: "refused", marked_wrong: "marked wrong",
};

export class ReviewView {
  constructor(root) {
    this.root = root;
    this.list = $("#review-list", root);
    this.editor = $("#review-editor", root);
    this.proposalList = $("#proposal-list", root);
    this.problemLine = $("#review-problem", root);
    this.by = $("#review-by", root);
    this.status = $("#review-status", root);
    this.by.value = localStorage.getItem(NAME_KEY) || "";
    this.by.addEventListener("change", () => localStorage.setItem(NAME_KEY, this.by.value.trim()));
    this.status.addEventListener("change", () => this.load());
    this.items = [];
    this.intents = [];
    this.current = -1;
    this.visible = false;
    document.addEventListener("keydown", (e) => this.key(e));
  }

  async load() {
    problem(this.problemLine, null);
    let page, known, offered;
    try {
      [page, known, offered] = await Promise.all([
        api("/api/review", { query: { status: this.status.value, limit: 200 } }),
        api("/api/review/intents"), api("/api/review/proposals")]);
    } catch (err) {
      problem(this.problemLine, err);
      fill(this.list);
      this.editor.hidden = true;
      return;
    }
    this.intents = known.intents;
    this.items = page.items;
    fill($("#review-count", this.root), String(page.counts.pending));
    fill(this.list, this.items.length ? this.items.map((item, i) => this.row(item, i))
      : h("li", { class: "muted" }, this.status.value === "pending"
        ? "Nothing to review: voiced understood everything it kept." : "None."));
    this.showProposals(offered.proposals);
    this.select(this.items.length ? Math.min(Math.max(this.current, 0), this.items.length - 1) : -1);
  }

  row(item, index) {
    const u = item.utterance;
    return h("li", { class: "review-item", tabindex: 0, dataset: { id: item.id, index },
                     onclick: () => this.select(index) },
      h("time", { class: "muted small" }, clock(u.started_at)), " ",
      h("span", { class: "badge meh reason" }, REASONS[item.reason] || item.reason), " ",
      h("span", { class: "heard" }, u.text || "(nothing)"), " ",
      u.intent ? h("span", { class: "intent" }, u.intent) : null,
      item.correction ? h("span", { class: "badge ok" }, `→ ${item.correction.text}`) : null);
  }

  select(index) {
    this.current = index;
    for (const li of this.list.querySelectorAll(".review-item")) {
      li.setAttribute("aria-current", String(Number(li.dataset.index) === index));
    }
    const item = this.items[index];
    this.editor.hidden = !item;
    if (!item) return;
    this.list.querySelector(`[data-index="${index}"]`)?.scrollIntoView({ block: "nearest" });
    this.edit(item);
  }

  edit(item) {
    const u = item.utterance;
    const fixed = item.correction || {};
    const player = item.audio ? h("audio", { class: "review-audio", controls: true, preload: "auto", src: item.audio }) : h("p", { class: "muted" }, "No audio.");
    const text = h("input", { name: "text", class: "review-text", required: true, maxlength: 500,
                              autocomplete: "off", value: fixed.text || u.text || "" });
    const intent = h("select", { name: "intent", class: "review-intent", "aria-label": "intended intent" },
      h("option", { value: "" }, "— not a command —"),
      this.intents.map((i) => h("option", { value: i.name }, i.name)));
    intent.value = fixed.text ? (fixed.intent || "") : (u.intent || "");
    const slots = h("div", { class: "review-slots" });
    const fillSlots = () => {
      const known = (this.intents.find((i) => i.name === intent.value) || { slots: [] }).slots;
      const values = fixed.slots || (intent.value === u.intent ? u.slots : {}) || {};
      fill(slots, known.map((name) => h("label", { class: "small" }, `${name} `,
        h("input", { name: `slot-${name}`, dataset: { slot: name }, size: 12, autocomplete: "off",
                     value: values[name] === undefined ? "" : String(values[name]) }))));
    };
    intent.addEventListener("change", fillSlots);
    fillSlots();
    const speaker = h("input", { name: "speaker", size: 12, maxlength: 64, autocomplete: "off",
                                 value: fixed.speaker || (u.speaker !== "unknown" ? u.speaker || "" : "") });
    const profile = h("input", { name: "add_to_profile", type: "checkbox" });
    const result = h("div", { class: "review-result", "aria-live": "polite" },
      fixed.profile ? h("p", { class: "muted small" }, `voice profile: ${fixed.profile}`) : null);
    const form = h("form", { class: "review-form", dataset: { id: item.id } },
      h("div", { class: "review-what" }, player,
        h("dl", { class: "facts" },
          h("dt", {}, "heard"), h("dd", {}, u.text || "(nothing)", u.confidence ? ` (${percent(u.confidence)})` : ""),
          h("dt", {}, "understood"), h("dd", {}, u.intent || "nothing", slotChips(u.slots)),
          h("dt", {}, "outcome"), h("dd", {}, outcomeBadge(u.outcome, u.detail)),
          h("dt", {}, "site"), h("dd", {}, u.site))),
      h("label", { class: "review-field" }, "What was said ", text),
      h("label", { class: "review-field" }, "Meant ", intent),
      slots,
      h("div", { class: "options" },
        h("label", { class: "small" }, "Who spoke ", speaker),
        h("label", { class: "small" }, profile, " add this recording to their voice profile")),
      h("div", { class: "inline" },
        h("button", { type: "submit", class: "review-save" }, item.status === "corrected" ? "Save again" : "Save"),
        h("button", { type: "button", class: "review-discard danger", onclick: () => this.discard(item) }, "Discard"),
        h("button", { type: "button", class: "review-skip", onclick: () => this.move(1) }, "Skip")),
      result);
    form.addEventListener("submit", (e) => { e.preventDefault(); this.save(item, form, result); });
    fill(this.editor, form);
  }

  async save(item, form, result) {
    const f = form.elements;
    const slots = {};
    for (const input of form.querySelectorAll("[data-slot]")) {
      if (input.value.trim()) slots[input.dataset.slot] = input.value.trim();
    }
    const body = { text: f.text.value, intent: f.intent.value || null, slots,
                   not_command: !f.intent.value, speaker: f.speaker.value.trim() || null,
                   add_to_profile: f.add_to_profile.checked, by: this.by.value.trim() || null };
    if (body.not_command) body.slots = {};
    let done;
    try {
      done = await api(`/api/review/${item.id}/correction`, { method: "POST", json: body });
    } catch (err) {
      fill(result, h("p", { class: "warn" }, err.message));
      return;
    }
    if (done.profile) localStorage.setItem(NAME_KEY, this.by.value.trim());
    const next = this.current;
    await this.load();
    if (done.profile) {
      this.problemLine.hidden = false;
      this.problemLine.className = "muted";
      this.problemLine.textContent = `voice profile: ${done.profile}`;
    }
    if (this.status.value === "pending") this.select(Math.min(next, this.items.length - 1));
  }

  async discard(item) {
    try {
      await api(`/api/review/${item.id}/discard`, { method: "POST", json: { by: this.by.value.trim() || null } });
    } catch (err) {
      problem(this.problemLine, err);
      return;
    }
    await this.load();
  }

  showProposals(proposals) {
    fill(this.proposalList, proposals.length ? proposals.map((p) => this.proposal(p))
      : h("li", { class: "muted" }, "Nothing yet: corrections that teach voiced something show up here."));
  }

  proposal(p) {
    const what = p.kind === "sentence"
      ? [`Add “${p.sentence}” as a sentence for `, h("span", { class: "intent" }, p.intent), slotChips(p.slots)]
      : [`Hear “${p.heard}” as “${p.value}” (${p.list})`];
    const decide = async (action, button) => {
      button.disabled = true;
      try {
        await api(`/api/review/proposals/${p.id}/${action}`, { method: "POST", json: { by: this.by.value.trim() || null } });
      } catch (err) {
        problem(this.problemLine, err);
        button.disabled = false;
        return;
      }
      const offered = await api("/api/review/proposals");
      this.showProposals(offered.proposals);
    };
    const accept = h("button", { type: "button", class: "proposal-accept" }, "Accept");
    const reject = h("button", { type: "button", class: "proposal-reject" }, "Reject");
    accept.addEventListener("click", () => decide("accept", accept));
    reject.addEventListener("click", () => decide("reject", reject));
    return h("li", { class: "proposal", dataset: { id: p.id, kind: p.kind } },
      h("span", {}, what), h("span", { class: "muted small" }, ` ${p.support}× `), accept, " ", reject);
  }

  move(step) {
    if (!this.items.length) return;
    this.select(Math.max(0, Math.min(this.items.length - 1, this.current + step)));
  }

  key(e) {
    if (!this.visible || e.altKey || e.metaKey || e.ctrlKey) return;
    const field = e.target.closest && e.target.closest("input, select, textarea");
    if (field) {
      if (e.key === "Escape") field.blur();
      return;  // Enter in a field submits the form
    }
    const form = $(".review-form", this.editor);
    const actions = {
      j: () => this.move(1), ArrowDown: () => this.move(1),
      k: () => this.move(-1), ArrowUp: () => this.move(-1),
      p: () => { const a = $("audio", this.editor); if (a) { a.currentTime = 0; a.play().catch(() => {}); } },
      Enter: () => form && form.requestSubmit(),
      n: () => { if (form) { form.elements.intent.value = ""; form.elements.intent.dispatchEvent(new Event("change")); } },
      d: () => { const item = this.items[this.current]; if (item) this.discard(item); },
      e: () => form && form.elements.text.focus(),
    };
    const act = actions[e.key];
    if (act) {
      e.preventDefault();
      act();
    }
  }
}
