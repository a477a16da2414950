// The browser microphone as voiced wants it: 16 kHz, 16-bit, mono PCM.
//
// getUserMedia → an AudioWorklet (ScriptProcessor where there is none) at the audio
// context's own rate (usually 48 kHz) → a low-pass filter and resampler → Int16 samples.

export const RATE = 16000;
const IDLE_CLOSE_MS = 15000; // the microphone (and its indicator) goes off after this idle

/** Why the microphone cannot be used on this page, or null. */
export function micProblem() {
  if (!window.isSecureContext) {
    return "The browser allows the microphone only on a secure page: open voiced as " +
      "http://localhost:… on its own machine, or through HTTPS (a reverse proxy) from others.";
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return "This browser gives pages no microphone.";
  }
  return null;
}

/** Windowed-sinc low-pass taps (cutoff in cycles per input sample), summing to 1. */
function lowpass(cutoff, count) {
  const taps = new Float32Array(count);
  const mid = (count - 1) / 2;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (count - 1)) +
      0.08 * Math.cos((4 * Math.PI * i) / (count - 1));
    taps[i] = sinc * blackman;
    sum += taps[i];
  }
  for (let i = 0; i < count; i++) taps[i] /= sum;
  return taps;
}

/** Streaming float → 16 kHz Int16 converter: anti-alias filter, then linear interpolation. */
export class Resampler {
  constructor(from, to = RATE) {
    this.step = from / to; // input samples per output sample
    this.taps = from > to ? lowpass((0.45 * to) / from, 63) : Float32Array.of(1);
    this.history = new Float32Array(this.taps.length - 1);
    this.last = 0; // the previous filtered sample (interpolation spans blocks)
    this.pos = 1; // where the next output lies, in [last, ...filtered] coordinates
  }

  /** Int16 samples at the target rate for one block of float samples. */
  push(input) {
    const taps = this.taps;
    const n = taps.length - 1;
    const x = new Float32Array(n + input.length);
    x.set(this.history);
    x.set(input, n);
    this.history = x.slice(input.length);
    // filtered[i] = Σ taps[k]·x[i+k]; z = [last, ...filtered]
    const z = new Float32Array(input.length + 1);
    z[0] = this.last;
    for (let i = 0; i < input.length; i++) {
      let acc = 0;
      for (let k = 0; k <= n; k++) acc += taps[k] * x[i + k];
      z[i + 1] = acc;
    }
    const out = [];
    let pos = this.pos;
    while (pos < z.length - 1) {
      const i = Math.floor(pos);
      const f = pos - i;
      const v = z[i] * (1 - f) + z[i + 1] * f;
      out.push(Math.max(-32768, Math.min(32767, Math.round(v * 32767))));
      pos += this.step;
    }
    this.pos = pos - (z.length - 1);
    this.last = z[z.length - 1];
    return Int16Array.from(out);
  }
}

/** RMS level of Int16 samples in dBFS (-96 for silence). */
export function dbfs(samples) {
  if (!samples.length) return -96;
  let sum = 0;
  for (const s of samples) sum += s * s;
  const rms = Math.sqrt(sum / samples.length) / 32768;
  return rms > 0 ? Math.max(-96, 20 * Math.log10(rms)) : -96;
}

/** A mono 16-bit WAV file of `samples` (Int16Array, or a list of them). */
export function wavBlob(samples, rate = RATE) {
  const parts = Array.isArray(samples) ? samples : [samples];
  const count = parts.reduce((n, p) => n + p.length, 0);
  const buffer = new ArrayBuffer(44 + count * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + count * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, count * 2, true);
  let offset = 44;
  for (const part of parts) {
    for (const s of part) { view.setInt16(offset, s, true); offset += 2; }
  }
  return new Blob([buffer], { type: "audio/wav" });
}

/** The microphone, shared by the page's parts: each `listen(fn)` gets 16 kHz Int16
 * blocks until it calls the function it was given back. The device opens on the first
 * listener and closes IDLE_CLOSE_MS after the last one left. */
export class Microphone {
  constructor() {
    this.listeners = new Set();
    this.context = null;
    this.stream = null;
    this.opening = null;
    this.idleTimer = null;
  }

  get isOpen() {
    return this.context !== null;
  }

  /** Start hearing; resolves to a function that stops this listener. */
  async listen(onSamples) {
    clearTimeout(this.idleTimer);
    await this.open();
    this.listeners.add(onSamples);
    return () => {
      this.listeners.delete(onSamples);
      if (!this.listeners.size) {
        clearTimeout(this.idleTimer);
        this.idleTimer = setTimeout(() => this.close(), IDLE_CLOSE_MS);
      }
    };
  }

  async open() {
    if (this.context) return;
    if (!this.opening) this.opening = this._open().finally(() => { this.opening = null; });
    await this.opening;
  }

  async _open() {
    const why = micProblem();
    if (why) throw new Error(why);
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
    const context = new AudioContext();
    try {
      await context.resume();
      const source = context.createMediaStreamSource(stream);
      const resampler = new Resampler(context.sampleRate);
      const deliver = (block) => {
        const samples = resampler.push(block);
        if (samples.length) for (const fn of [...this.listeners]) fn(samples);
      };
      // a node that reaches no output is not run: route it to a silent gain
      const mute = context.createGain();
      mute.gain.value = 0;
      mute.connect(context.destination);
      let node;
      if (context.audioWorklet) {
        await context.audioWorklet.addModule("/static/capture-worklet.js");
        node = new AudioWorkletNode(context, "voiced-capture", { numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1 });
        node.port.onmessage = (event) => deliver(event.data);
      } else {
        node = context.createScriptProcessor(4096, 1, 1);
        node.onaudioprocess = (event) => deliver(new Float32Array(event.inputBuffer.getChannelData(0)));
      }
      source.connect(node);
      node.connect(mute);
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop());
      await context.close();
      throw err;
    }
    this.stream = stream;
    this.context = context;
  }

  /** Release the device now. */
  close() {
    clearTimeout(this.idleTimer);
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.context) this.context.close();
    this.stream = null;
    this.context = null;
  }
}

export const microphone = new Microphone();

/** Records from the shared microphone into a list of Int16 blocks. */
export class Recorder {
  constructor(onLevel = () => {}) {
    this.blocks = [];
    this.samples = 0;
    this.onLevel = onLevel;
    this.stopListening = null;
  }

  get seconds() {
    return this.samples / RATE;
  }

  async start() {
    this.blocks = [];
    this.samples = 0;
    this.stopListening = await microphone.listen((block) => {
      this.blocks.push(block);
      this.samples += block.length;
      this.onLevel(dbfs(block), this.seconds);
    });
  }

  /** Stop; resolves to the recording as a WAV blob. */
  stop() {
    if (this.stopListening) this.stopListening();
    this.stopListening = null;
    return wavBlob(this.blocks);
  }
}
