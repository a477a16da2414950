// The page's one /api/events websocket (every site, with audio levels), reconnecting with
// backoff; the Live and Status views subscribe to its messages.
import { wsUrl } from "./api.js";

export class EventStream {
  constructor(path = "/api/events?levels=true") {
    this.path = path;
    this.handlers = new Set();
    this.stateHandlers = new Set();
    this.ws = null;
    this.delay = 500;
    this.state = "connecting";
  }

  /** fn(message) for every message; returns a function that unsubscribes. */
  on(fn) {
    this.handlers.add(fn);
    return () => this.handlers.delete(fn);
  }

  /** fn(state) when the connection opens ("open") or is lost ("closed"). */
  onState(fn) {
    this.stateHandlers.add(fn);
    fn(this.state);
  }

  start() {
    const ws = new WebSocket(wsUrl(this.path));
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      this.setState("open");
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const fn of this.handlers) {
        try {
          fn(msg);
        } catch (err) {
          console.error("event handler failed", err);
        }
      }
    };
    ws.onclose = () => {
      this.setState("closed");
      setTimeout(() => this.start(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  setState(state) {
    this.state = state;
    for (const fn of this.stateHandlers) fn(state);
  }
}
