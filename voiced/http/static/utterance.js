// One utterance as it happens: what was heard (partials, then the transcript), who spoke,
// the intent and slots, what the handler did and said, and the outcome. Built from the
// pipeline's event messages (the Live cards, push-to-talk) or from a REST result.
import { h, fill, clock, ms, percent, outcomeBadge, slotChips, timingChart } from "./ui.js";
import { arbitrationLine } from "./arbitration.js";

export class UtteranceView {
  constructor(sessionId = "", at = Date.now() / 1000) {
    this.sessionId = sessionId;
    this.ended = false;
    this.heard = h("span", { class: "heard muted" }, "…");
    this.intentLine = h("div", { class: "utt-intent", hidden: true });
    this.answerLine = h("div", { class: "utt-answer", hidden: true });
    this.footLine = h("div", { class: "utt-foot", hidden: true });
    this.el = h("div", { class: "utt", dataset: { session: sessionId } },
      h("div", { class: "utt-head" }, h("time", { class: "time" }, clock(at)), " ", this.heard),
      this.intentLine, this.answerLine, this.footLine);
    this.speaker = null;
    this.intent = null;
    this.handler = null;
    this.said = [];
  }

  /** Apply one websocket message of this utterance. */
  apply(msg) {
    const data = msg.data || {};
    switch (msg.type) {
      case "speech_started":
        this.setHeard("listening…", "partial");
        break;
      case "partial":
        if (data.text) this.setHeard(data.text, "partial");
        break;
      case "transcript":
        this.setHeard(data.text || "(nothing)", data.isSpeech === false ? "muted" : "final",
                      data.confidence);
        break;
      case "speaker":
        this.speaker = data;
        this.renderIntent();
        break;
      case "intent":
        this.intent = data;
        this.renderIntent();
        break;
      case "not_recognized":
        if (data.text && this.heard.classList.contains("muted")) this.setHeard(data.text, "final");
        this.intent = { intent: null, reason: data.reason };
        this.renderIntent();
        break;
      case "handled":
        this.handler = data;
        this.renderAnswer();
        break;
      case "say":
        if (data.text) this.said.push(data.text);
        this.renderAnswer();
        break;
      case "error":
        this.error = data;
        this.renderAnswer();
        break;
      case "outcome":
        this.outcome = data;
        this.timings = msg.timings || {};
        this.renderFoot();
        break;
      case "arbitration":
        this.el.append(arbitrationLine(data));
        break;
      case "session_ended":
        this.ended = true;
        this.termination = data.reason;
        if (!this.outcome && this.heard.classList.contains("partial")) {
          // ended before an utterance was processed: keep what the partials had heard
          const said = this.heard.textContent;
          this.setHeard(said === "listening…" ? "(nothing heard)" : said, "muted");
        } else if (!this.outcome && this.heard.textContent === "…") {
          this.setHeard("(nothing heard)", "muted");
        }
        this.renderFoot();
        break;
      default:
        break;
    }
  }

  setHeard(text, kind, confidence) {
    this.heard.className = `heard ${kind}`;
    fill(this.heard, text);
    if (confidence !== undefined && confidence !== null) {
      this.heard.title = `confidence ${percent(confidence)}`;
    }
  }

  renderIntent() {
    const parts = [];
    if (this.intent) {
      if (this.intent.intent) {
        parts.push(h("span", { class: "intent" }, this.intent.intent));
        parts.push(slotChips(this.intent.slots));
      } else {
        parts.push(h("span", { class: "intent none" }, "no intent"));
      }
    }
    if (this.speaker && this.speaker.name) {
      const who = this.speaker.name === "unknown" ? "unknown voice" : this.speaker.name;
      // events say verified: false, REST answers claimed: true, for a name only given
      // with the text: never shown as a recognised voice
      const claimed = this.speaker.verified === false || this.speaker.claimed === true;
      const conf = this.speaker.confidence && !claimed ? ` ${percent(this.speaker.confidence)}` : "";
      parts.push(h("span", { class: claimed ? "speaker claimed" : "speaker",
                             title: claimed ? "claimed, not identified by voice" : "identified by voice" },
                   `${claimed ? "claimed" : "voice"}: ${who}${conf}`));
    }
    this.intentLine.hidden = !parts.length;
    fill(this.intentLine, parts);
  }

  renderAnswer() {
    const parts = [];
    const handler = this.handler;
    if (handler) {
      const who = handler.plugin ? `${handler.plugin}: ` : "";
      parts.push(h("span", { class: "handler" }, `${who}${handler.outcome || ""}`));
      if (handler.error) parts.push(h("span", { class: "bad-text" }, ` — ${handler.error}`));
    }
    for (const text of this.said) parts.push(h("q", { class: "answer" }, text));
    if (handler && handler.text && !this.said.includes(handler.text)) {
      parts.push(h("q", { class: "answer" }, handler.text));
    }
    if (this.error) parts.push(h("span", { class: "bad-text" }, `${this.error.code}: ${this.error.message}`));
    this.answerLine.hidden = !parts.length;
    fill(this.answerLine, parts);
  }

  renderFoot() {
    const parts = [];
    if (this.outcome) {
      parts.push(outcomeBadge(this.outcome.outcome, this.outcome.detail));
      const total = this.timings && (this.timings.processing ?? null);
      if (total !== null && total !== undefined) parts.push(h("span", { class: "muted" }, ` ${ms(total)} after the end of speech`));
    } else if (this.termination && this.termination !== "nominal") {
      parts.push(h("span", { class: "badge meh" }, this.termination));
    }
    this.footLine.hidden = !parts.length;
    fill(this.footLine, parts);
  }

  /** The stage timings chart (when an outcome carried them). */
  chart() {
    return timingChart(this.timings);
  }
}

/** A REST recognition result (text-to-intent, speech-to-intent) as an utterance view. */
export function runView(run) {
  const view = new UtteranceView(run.session_id || "");
  const t = run.transcript || {};
  view.apply({ type: "transcript", data: { text: t.text, confidence: t.confidence, isSpeech: t.is_speech } });
  if (run.speaker) view.apply({ type: "speaker", data: run.speaker });
  if (run.intent) {
    view.apply({ type: "intent", data: { intent: run.intent, slots: run.slots } });
  } else {
    view.apply({ type: "not_recognized", data: { reason: run.reason } });
  }
  if (run.handler) {
    view.apply({ type: "handled", data: { ...run.handler, text: run.handler.answer } });
  }
  if (run.outcome) {
    view.apply({ type: "outcome", data: { outcome: run.outcome, detail: run.detail }, timings: run.timings });
  } else {
    // handle=false: nothing acted; say what would have happened
    const would = run.intent ? `would run ${run.intent}` : (run.reason || "no match").replace("_", " ");
    view.footLine.hidden = false;
    fill(view.footLine, h("span", { class: "badge meh outcome" }, `not handled (${would})`));
  }
  return view;
}

/** One /api/transcribe result. */
export function transcribeView(result) {
  const view = new UtteranceView("");
  view.el.prepend(h("div", { class: "file" }, result.file));
  view.apply({ type: "transcript", data: { text: result.text, confidence: result.confidence, isSpeech: result.is_speech } });
  if ("intent" in result) {
    if (result.intent) view.apply({ type: "intent", data: { intent: result.intent, slots: result.slots } });
    else view.apply({ type: "not_recognized", data: {} });
  }
  view.footLine.hidden = false;
  fill(view.footLine, h("span", { class: "muted" },
    `${result.language} · confidence ${percent(result.confidence)} · ` +
    Object.entries(result.timings || {}).map(([k, v]) => `${k.replace("_ms", "")} ${ms(v)}`).join(", ")));
  return view;
}
