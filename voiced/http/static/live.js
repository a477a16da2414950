// Live: every satellite as a card (mode, area, level meter, and what it hears as it
// happens), from /api/status and the /api/events stream.
import { api } from "./api.js";
import { h, fill, meter, clock } from "./ui.js";
import { UtteranceView } from "./utterance.js";

const KEEP = 6; // utterances shown per card

class SiteCard {
  constructor(site) {
    this.site = site;
    this.meter = meter();
    this.badges = h("span", { class: "badges" });
    this.heardAt = h("span", { class: "muted small heard-at" });
    this.list = h("div", { class: "utts" });
    this.empty = h("p", { class: "muted small" }, "Nothing heard yet.");
    this.el = h("article", { class: "card site", dataset: { site } },
      h("header", {}, h("h3", {}, site), this.badges),
      h("div", { class: "level-row" }, this.meter.el, this.heardAt),
      this.empty, this.list);
    this.utts = new Map();
    this.info = {};
  }

  update(info) {
    Object.assign(this.info, info);
    const i = this.info;
    const badges = [];
    badges.push(h("span", { class: `dot ${i.connected || i.live ? "on" : "off"}`,
                            title: i.connected ? "audio arriving" : i.live ? "live" : "not connected" }));
    if (i.mode) badges.push(h("span", { class: "badge mode" }, i.mode));
    if (i.area) badges.push(h("span", { class: "badge area" }, i.area));
    if (i.source) badges.push(h("span", { class: "badge source" }, i.source));
    if (i.gone) badges.push(h("span", { class: "badge meh" }, "gone"));
    fill(this.badges, badges);
    this.el.classList.toggle("gone", !!i.gone);
    if (i.last_heard) this.heardAt.textContent = `heard ${clock(i.last_heard)}`;
  }

  event(msg) {
    const sid = msg.sessionId || "";
    let view = this.utts.get(sid);
    if (!view) {
      if (msg.type === "session_ended" || msg.type === "error") {
        if (msg.type === "error") this.errorLine(msg);
        return;
      }
      view = new UtteranceView(sid, msg.time);
      this.utts.set(sid, view);
      this.list.prepend(view.el);
      this.empty.hidden = true;
      while (this.utts.size > KEEP) {
        const [oldest, old] = this.utts.entries().next().value;
        old.el.remove();
        this.utts.delete(oldest);
      }
    }
    view.apply(msg);
    if (msg.type === "speech_started" || msg.type === "transcript") {
      this.heardAt.textContent = `heard ${clock(msg.time)}`;
    }
  }

  errorLine(msg) {
    const data = msg.data || {};
    this.list.prepend(h("div", { class: "utt error" }, h("time", { class: "time" }, clock(msg.time)), " ",
                        h("span", { class: "bad-text" }, `${data.code}: ${data.message}`)));
    this.empty.hidden = true;
  }

  level(dbfs) {
    this.meter.set(dbfs);
  }
}

export class LiveView {
  constructor(root, events) {
    this.root = root;
    this.grid = root.querySelector("#sites");
    this.emptyNote = root.querySelector("#live-empty");
    this.cards = new Map();
    events.on((msg) => this.message(msg));
    events.onState((state) => { if (state === "open") this.refresh(); });
  }

  card(site) {
    let card = this.cards.get(site);
    if (!card) {
      card = new SiteCard(site);
      this.cards.set(site, card);
      const after = [...this.cards.keys()].sort().find((s) => s > site);
      this.grid.insertBefore(card.el, after ? this.cards.get(after).el : null);
      this.emptyNote.hidden = true;
    }
    return card;
  }

  async refresh() {
    try {
      const status = await api("/api/status");
      for (const sat of status.satellites || []) this.card(sat.site).update({ ...sat, gone: false });
    } catch (err) {
      console.warn("status:", err.message);
    }
  }

  message(msg) {
    switch (msg.type) {
      case "hello":
        for (const [site, info] of Object.entries(msg.sites || {})) {
          this.card(site).update({ ...info, live: true, gone: false });
        }
        break;
      case "site_connected":
        this.card(msg.site).update({ ...msg.data, live: true, gone: false });
        break;
      case "site_gone":
        if (this.cards.has(msg.site)) this.card(msg.site).update({ live: false, connected: false, gone: true });
        break;
      case "level": {
        // levels come only while some site has audio: no message for a while means quiet
        clearTimeout(this.quiet);
        const levels = (msg.data && msg.data.levels) || {};
        if (Object.keys(levels).length) {
          this.quiet = setTimeout(() => this.message({ type: "level", data: { levels: {} } }), 1500);
        }
        for (const site of Object.keys(levels)) this.card(site);
        for (const [site, card] of this.cards) {
          const heard = Object.hasOwn(levels, site);  // not `in`: "constructor" is a site id
          card.level(heard ? levels[site] : null);
          if (!!card.info.connected !== heard) card.update({ connected: heard });
        }
        break;
      }
      case "status":
      case "dropped":
        break;
      default:
        // an error about a site never heard (garbage on some topic) makes no card: Status lists it
        if (msg.site && (msg.type !== "error" || this.cards.has(msg.site))) this.card(msg.site).event(msg);
    }
  }
}
