// Try it: push-to-talk (this tab streams the microphone over /api/stream as a satellite
// in wake mode: press = startListening, release = stopListening), a text box
// (/api/text-to-intent) and file upload (/api/transcribe, /api/speech-to-intent).
import { api, wsUrl } from "./api.js";
import { microphone, micProblem, dbfs, RATE } from "./audio.js";
import { h, $, meter, problem } from "./ui.js";
import { UtteranceView, runView, transcribeView } from "./utterance.js";

const HOLD_MS = 350; // a press shorter than this is a tap: listen until the speech ends
const SESSION_LIMIT_MS = 45000; // give up waiting for the end of a session after this
const KEEP = 10; // results shown

/** This tab as a satellite: the /api/stream websocket. */
class BrowserSatellite {
  constructor(site, onMessage, onClose) {
    this.site = site;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.ws = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl("/api/stream"));
      ws.binaryType = "arraybuffer";
      let ready = false;
      ws.onopen = () => ws.send(JSON.stringify({ site: this.site, rate: RATE, format: "s16le", mode: "wake" }));
      ws.onmessage = (event) => {
        let msg;
        try { msg = JSON.parse(event.data); } catch { return; }
        if (!ready) {
          if (msg.type === "ready") {
            ready = true;
            this.ws = ws;
            resolve();
          } else if (msg.type === "stream_error") {
            reject(new Error(msg.message));
          }
          return;
        }
        this.onMessage(msg);
      };
      ws.onclose = (event) => {
        if (!ready) reject(new Error(event.reason || "voiced closed the audio stream"));
        else this.onClose(event);
        this.ws = null;
      };
    });
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  control(type) {
    if (this.open) this.ws.send(JSON.stringify({ type }));
  }

  audio(samples) {
    // bounded: a tab that cannot send keeps nothing back (voiced would be behind anyway)
    if (this.open && this.ws.bufferedAmount < 256 * 1024) this.ws.send(samples.buffer);
  }

  close() {
    if (this.ws) this.ws.close(1000, "page closed the stream");
    this.ws = null;
  }
}

export class TryView {
  constructor(root) {
    this.root = root;
    this.results = $("#try-result", root);
    this.button = $("#talk", root);
    this.stateLine = $("#talk-state", root);
    this.problemLine = $("#try-problem", root);
    this.siteInput = $("#try-site", root);
    this.handleBox = $("#try-handle", root);
    this.level = meter("talk-level");
    $("#try-meter", root).replaceWith(this.level.el);
    this.state = "idle";
    this.satellite = null;
    this.view = null;
    this.stopMic = null;
    this.held = false;

    const saved = localStorage.getItem("voiced.site");
    this.siteInput.value = saved || `browser-${Math.random().toString(36).slice(2, 6)}`;
    this.siteInput.addEventListener("change", () => {
      localStorage.setItem("voiced.site", this.siteInput.value.trim());
      if (this.satellite) this.satellite.close();
      this.satellite = null;
    });
    const why = micProblem();
    if (why) {
      problem($("#mic-problem", root), new Error(why));
      this.button.disabled = true;
    }
    this.bindTalk();
    $("#text-form", root).addEventListener("submit", (e) => { e.preventDefault(); this.sendText(); });
    $("#file-transcribe", root).addEventListener("click", () => this.sendFiles("transcribe"));
    $("#file-command", root).addEventListener("click", () => this.sendFiles("command"));
  }

  // ---- push-to-talk -------------------------------------------------------------------
  bindTalk() {
    const b = this.button;
    b.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      e.preventDefault();
      b.setPointerCapture(e.pointerId);
      this.press();
    });
    b.addEventListener("pointerup", () => this.release());
    b.addEventListener("pointercancel", () => this.release());
    b.addEventListener("contextmenu", (e) => e.preventDefault());
    b.addEventListener("keydown", (e) => {
      if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); this.press(); }
    });
    b.addEventListener("keyup", (e) => {
      if (e.key === " " || e.key === "Enter") { e.preventDefault(); this.release(); }
    });
  }

  setState(state, text) {
    this.state = state;
    this.button.dataset.state = state;
    this.button.textContent = state === "listening" ? "Listening…" : state === "finishing" ? "Thinking…" : "Hold to talk";
    this.stateLine.textContent = text;
  }

  async press() {
    this.held = true;
    if (this.state === "listening") { // a tap while listening (tap mode) ends it
      this.finish();
      return;
    }
    if (this.state !== "idle") return;
    problem(this.problemLine, null);
    this.setState("starting", "Opening the microphone…");
    try {
      const site = this.siteInput.value.trim();
      if (!this.satellite || !this.satellite.open || this.satellite.site !== site) {
        if (this.satellite) this.satellite.close();
        const sat = new BrowserSatellite(site, (m) => this.streamMessage(m), () => this.streamClosed());
        await sat.connect();
        this.satellite = sat;
      }
      this.stopMic = await microphone.listen((samples) => this.samples(samples));
    } catch (err) {
      this.reset();
      problem(this.problemLine, err);
      return;
    }
    this.view = null;
    this.expecting = true;
    this.satellite.control("listen");
    this.listenAt = performance.now();
    this.setState("listening", this.held
      ? "Speak now; let go when you are done."
      : "Speak now; voiced stops listening when you stop talking (tap to stop).");
    clearTimeout(this.limit);
    this.limit = setTimeout(() => this.reset(), SESSION_LIMIT_MS);
  }

  release() {
    if (!this.held) return;
    this.held = false;
    if (this.state === "listening" && performance.now() - this.listenAt >= HOLD_MS) {
      this.finish();
    } else if (this.state === "listening") {
      this.stateLine.textContent = "Speak now; voiced stops listening when you stop talking (tap to stop).";
    }
  }

  finish() {
    this.stopAudio();
    this.satellite.control("stop");
    this.setState("finishing", "Working it out…");
  }

  samples(samples) {
    this.level.set(dbfs(samples));
    if (this.state === "listening") this.satellite.audio(samples);
  }

  stopAudio() {
    if (this.stopMic) this.stopMic();
    this.stopMic = null;
    this.level.set(null);
  }

  reset() {
    clearTimeout(this.limit);
    this.stopAudio();
    this.setState("idle", "Hold the button while you speak, or tap it and speak.");
  }

  streamMessage(msg) {
    if (msg.type === "stream_error") {
      problem(this.problemLine, new Error(msg.message));
      return;
    }
    // the session this press opened (text typed for this site has sessions of its own)
    if (msg.type === "session_started" && this.expecting) {
      this.expecting = false;
      this.view = new UtteranceView(msg.sessionId, msg.time);
      this.show(this.view.el, "voice");
    }
    if (!this.view || msg.sessionId !== this.view.sessionId) {
      if (msg.type === "error" && this.state !== "idle") problem(this.problemLine, new Error(msg.data.message));
      return;
    }
    this.view.apply(msg);
    if (msg.type === "speech_ended" && this.state === "listening") {
      this.stopAudio();
      this.setState("finishing", "Working it out…");
    }
    if (msg.type === "session_ended") this.reset();
  }

  streamClosed() {
    this.satellite = null;
    if (this.state !== "idle") {
      this.reset();
      problem(this.problemLine, new Error("voiced closed the audio stream"));
    }
  }

  // ---- text and files -------------------------------------------------------------------
  show(el, kind) {
    el.dataset.kind = kind;
    this.results.prepend(el);
    while (this.results.children.length > KEEP) this.results.lastElementChild.remove();
  }

  async sendText() {
    const input = $("#text-input", this.root);
    const text = input.value.trim();
    if (!text) return;
    problem(this.problemLine, null);
    try {
      const run = await api("/api/text-to-intent", {
        method: "POST",
        json: { text, site: this.siteInput.value.trim(), handle: this.handleBox.checked },
      });
      this.show(runView(run).el, "text");
    } catch (err) {
      problem(this.problemLine, err);
    }
  }

  async sendFiles(action) {
    const files = [...$("#file-input", this.root).files];
    problem(this.problemLine, null);
    if (!files.length) {
      problem(this.problemLine, new Error("Choose a recording first."));
      return;
    }
    const form = new FormData();
    for (const f of files) form.append("file", f, f.name);
    try {
      if (action === "transcribe") {
        const body = await api("/api/transcribe", { method: "POST", form, query: { site: this.siteInput.value.trim() } });
        for (const result of body.results.slice().reverse()) this.show(transcribeView(result).el, "file");
      } else {
        if (files.length > 1) throw new Error("Run as a command takes one recording.");
        const run = await api("/api/speech-to-intent", {
          method: "POST", form,
          query: { site: this.siteInput.value.trim(), handle: String(this.handleBox.checked) },
        });
        const view = runView(run);
        view.el.prepend(h("div", { class: "file" }, files[0].name));
        this.show(view.el, "file");
      }
    } catch (err) {
      problem(this.problemLine, err);
    }
  }
}
