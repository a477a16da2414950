// The page: six views behind tabs (the address's #fragment picks one), one live event
// stream shared by Live and Status.
import { $ } from "./ui.js";
import { EventStream } from "./events.js";
import { LiveView } from "./live.js";
import { TryView } from "./tryit.js";
import { HistoryView } from "./history.js";
import { SpeakersView } from "./speakers.js";
import { ReviewView } from "./review.js";
import { StatusView } from "./status.js";

const TABS = ["live", "try", "history", "review", "speakers", "status"];

const events = new EventStream();
const views = {
  live: new LiveView($("#live"), events),
  try: new TryView($("#try")),
  history: new HistoryView($("#history")),
  review: new ReviewView($("#review")),
  speakers: new SpeakersView($("#speakers")),
  status: new StatusView($("#status"), events),
};

// what is wrong with voiced as a whole, above every view
events.on((msg) => {
  const status = msg.type === "hello" ? msg.status : msg.type === "status" ? msg.data : null;
  if (!status) return;
  const problems = [];
  if (!status.mqtt) problems.push("voiced is not connected to the MQTT broker");
  if (status.overloaded) problems.push("voiced is overloaded: audio is being shed");
  if (status.handlersFailed) problems.push(`${status.handlersFailed} handler(s) disabled (see Status)`);
  if (status.reloadError) problems.push(`the last reload failed: ${status.reloadError}`);
  const banner = $("#banner");
  banner.hidden = !problems.length;
  banner.textContent = problems.join(" · ");
});

events.on((msg) => {
  if (msg.type === "outcome" && location.hash === "#history") views.history.changed();
});

events.onState((state) => {
  const dot = $("#conn");
  dot.dataset.state = state;
  dot.title = state === "open" ? "live events connected" : "live events: reconnecting…";
});

function show() {
  const name = TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "live";
  for (const tab of TABS) {
    $(`#${tab}`).hidden = tab !== name;
    const link = $(`#tabs a[href="#${tab}"]`);
    link.setAttribute("aria-current", tab === name ? "page" : "false");
  }
  views.status.visible = name === "status";
  views.review.visible = name === "review";
  if (name === "history") views.history.load();
  if (name === "review") views.review.load();
  if (name === "speakers") views.speakers.load();
  if (name === "status") views.status.load();
  document.body.dataset.view = name;
}

window.addEventListener("hashchange", show);
show();
events.start();
document.body.dataset.ready = "true";
