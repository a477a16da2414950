// An `arbitration` event (which satellite of a room group answers a command several heard)
// as one line under the winner's utterance: the reason and each candidate's score, with
// what the score is made of in the tooltip. README "Arbitration" explains the numbers.
import { h } from "./ui.js";

const num = (v, unit = "") => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)}${unit}`);

export function arbitrationLine(data) {
  const candidates = (data.candidates || []).map((c) => h("span", {
    class: `badge ${c.won ? "ok" : "meh"}`, dataset: { site: c.site || "" },
    title: `started +${num(c.startMs, " ms")} · SNR ${num(c.snrDb, " dB")} · modulation ` +
           `${num(c.modulationDb, " dB")} · onset ${num(c.onsetDb, " dB")} · floor ` +
           `${num(c.floorDbfs, " dBFS")} · speech ${num((c.speechRatio ?? 0) * 100, " %")}`,
  }, `${c.site} ${num(c.score)}`));
  return h("div", { class: "utt-arbitration muted small" },
           `${data.winner || "nobody"} answers (${data.reason || "?"}): `, ...candidates);
}
