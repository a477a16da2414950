// Speakers: who is enrolled (/api/speakers), enrolling a person from sentences recorded
// here (the API's quality check verdicts shown per sample), removing, and testing who is
// speaking (/api/speakers/identify).
import { api } from "./api.js";
import { Recorder } from "./audio.js";
import { h, $, fill, clock, meter, percent, problem } from "./ui.js";

/** A record/stop button with its level meter and length; `blob` holds the last take. */
class Take {
  constructor(label, onDone = () => {}) {
    this.blob = null;
    this.onDone = onDone;
    this.meter = meter("take-level");
    this.length = h("span", { class: "take-length muted small" }, "");
    this.player = h("audio", { class: "take-audio", controls: true, hidden: true, preload: "auto" });
    this.button = h("button", { type: "button", class: "record", onclick: () => this.toggle() }, label);
    this.recorder = new Recorder((dbfs, seconds) => {
      this.meter.set(dbfs);
      this.length.textContent = `${seconds.toFixed(1)} s`;
      this.length.dataset.seconds = seconds.toFixed(1);
    });
    this.recording = false;
    this.el = h("div", { class: "take" }, this.button, this.meter.el, this.length, this.player);
  }

  async toggle() {
    if (this.recording) {
      this.recording = false;
      this.blob = this.recorder.stop();
      this.meter.set(null);
      this.button.textContent = "Record again";
      this.button.classList.remove("on");
      if (this.player.src) URL.revokeObjectURL(this.player.src);
      this.player.src = URL.createObjectURL(this.blob);
      this.player.hidden = false;
      this.el.dataset.recorded = "true";
      this.onDone(this);
      return;
    }
    try {
      await this.recorder.start();
    } catch (err) {
      this.onDone(this, err);
      return;
    }
    this.recording = true;
    this.el.dataset.recorded = "false";
    this.button.textContent = "Stop";
    this.button.classList.add("on");
  }
}

export class SpeakersView {
  constructor(root) {
    this.root = root;
    this.list = $("#speaker-list", root);
    this.prompts = $("#enroll-prompts", root);
    this.problemLine = $("#speakers-problem", root);
    this.enrollResult = $("#enroll-result", root);
    this.takes = [];
    this.loadedPrompts = false;
    $("#enroll-form", root).addEventListener("submit", (e) => { e.preventDefault(); this.enroll(); });
    this.identifyTake = new Take("Record", (take, err) => err ? problem(this.problemLine, err) : this.identify(take));
    $("#identify-take", root).replaceWith(this.identifyTake.el);
  }

  async load() {
    problem(this.problemLine, null);
    let body;
    try {
      body = await api("/api/speakers");
    } catch (err) {
      problem(this.problemLine, err);
      fill(this.list, h("li", { class: "muted" }, err.code === "speakers_off"
        ? "Speaker identification is off." : "Could not read the speakers."));
      return;
    }
    fill($("#speaker-model", this.root), `${body.model} · match threshold ${body.threshold}`);
    fill(this.list, body.speakers.length ? body.speakers.map((p) => this.person(p))
      : h("li", { class: "muted" }, "Nobody is enrolled yet."));
    if (!this.loadedPrompts) {
      this.loadedPrompts = true;
      const count = Math.min(body.prompts.length, Math.max(body.recommended_samples, 1));
      this.takes = body.prompts.slice(0, count).map((text, i) => {
        const take = new Take("Record", (t, err) => { if (err) problem(this.problemLine, err); });
        take.prompt = text;
        take.verdict = h("div", { class: "verdict" });
        take.row = h("li", { class: "prompt", dataset: { index: i } },
          h("p", { class: "prompt-text" }, `“${text}”`), take.el, take.verdict);
        return take;
      });
      fill(this.prompts, this.takes.map((t) => t.row));
    }
  }

  person(p) {
    const notes = [`${p.samples} sample${p.samples === 1 ? "" : "s"}`];
    if (p.adapted) notes.push(`${p.adapted} adapted`);
    if (p.needs_reenrollment) notes.push("needs enrolling again (another model)");
    if (p.enrolled_at) notes.push(`since ${clock(p.enrolled_at)}`);
    const remove = h("button", { type: "button", class: "danger small" }, "Remove");
    let armed = null;
    remove.addEventListener("click", async () => {
      if (!armed) {
        remove.textContent = `Really remove ${p.name}?`;
        armed = setTimeout(() => { armed = null; remove.textContent = "Remove"; }, 5000);
        return;
      }
      clearTimeout(armed);
      try {
        await api(`/api/speakers/${encodeURIComponent(p.name)}`, { method: "DELETE" });
      } catch (err) {
        problem(this.problemLine, err);
      }
      this.load();
    });
    return h("li", { class: "person", dataset: { name: p.name } },
      h("strong", {}, p.name), " ", h("span", { class: "muted small" }, notes.join(" · ")), " ", remove);
  }

  async enroll() {
    problem(this.problemLine, null);
    const form = $("#enroll-form", this.root);
    const name = form.elements.name.value.trim();
    const recorded = this.takes.filter((t) => t.blob);
    if (!name) return problem(this.problemLine, new Error("Give the person's name."));
    if (!recorded.length) return problem(this.problemLine, new Error("Record the sentences first."));
    const data = new FormData();
    data.append("name", name);
    if (form.elements.replace.checked) data.append("replace", "true");
    recorded.forEach((t) => data.append("file", t.blob, `sentence-${Number(t.row.dataset.index) + 1}.wav`));
    this.takes.forEach((t) => fill(t.verdict));
    fill(this.enrollResult, h("span", { class: "muted" }, "Checking the recordings…"));
    let body;
    try {
      body = await api("/api/speakers", { method: "POST", form: data });
    } catch (err) {
      body = err.body;
      if (!body || !body.samples) {
        fill(this.enrollResult);
        problem(this.problemLine, err);
        return;
      }
    }
    body.samples.forEach((sample, i) => {
      const take = recorded[i];
      fill(take.verdict, h("span", { class: `badge ${sample.ok ? "ok" : "bad"}` }, sample.ok ? "ok" : "refused"),
           " ", h("span", { class: "verdict-text" }, sample.verdict));
      take.row.dataset.ok = String(sample.ok);
    });
    if (body.error) {
      fill(this.enrollResult, h("p", { class: "bad-text enroll-failed" }, body.error.message));
    } else {
      fill(this.enrollResult, h("p", { class: "ok-text enrolled" },
        `Enrolled ${body.name}: ${body.stored} sample(s) stored, ${body.total} in all.`),
        body.warning ? h("p", { class: "muted" }, body.warning) : null);
      this.load();
    }
  }

  async identify(take) {
    problem(this.problemLine, null);
    const out = $("#identify-result", this.root);
    fill(out, h("span", { class: "muted" }, "Listening to it…"));
    const data = new FormData();
    data.append("file", take.blob, "sample.wav");
    try {
      const body = await api("/api/speakers/identify", { method: "POST", form: data });
      const r = body.results[0];
      const scores = Object.entries(r.scores || {}).sort(([, a], [, b]) => b - a);
      fill(out, h("p", { class: "identified", dataset: { speaker: r.speaker } },
        r.speaker === "unknown" ? "An unknown voice" : h("strong", {}, r.speaker),
        ` (${percent(r.confidence)})`),
        scores.length ? h("ul", { class: "scores small" }, scores.map(([n, s]) => h("li", {}, `${n}: ${s.toFixed(3)}`))) : null);
    } catch (err) {
      fill(out);
      problem(this.problemLine, err);
    }
  }
}
