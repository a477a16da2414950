// Talking to voiced: the REST API (JSON errors become ApiError) and websocket addresses.
// The page is served by voiced itself, so every address is relative to this origin and
// the session cookie (or loopback) authorizes it.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.field = error.field || null;
    this.body = body;
  }
}

/** Call the API: api("/api/history", {query: {q: "x"}}) or {method: "POST", json: {...}}
 * or {method: "POST", form: FormData}. Resolves to the JSON body; rejects with ApiError. */
export async function api(path, { method = "GET", query = null, json = undefined, form = null } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(0, { error: { code: "offline", message: `voiced does not answer (${err.message})` } });
  }
  if (response.status === 401) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
  }
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    body = await response.json();
  }
  // a 422 from enrollment still carries the verdicts the page shows
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** ws:// or wss:// address of a websocket path on this server. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}
