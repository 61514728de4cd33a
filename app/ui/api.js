// The page's client for Reel's HTTP API (specs/api.md). It speaks only to the
// origin that served the page and sends the API key as a bearer token on every call.

export const FINAL_STATUSES = new Set(["completed", "failed", "cancelled"]);

/** An error answer from the API, in OpenAI's shape: {"error": {message, type, param, code}}. */
export class ApiError extends Error {
  constructor(status, body, headers) {
    const error = (body && body.error) || {};
    const detail = body && typeof body.detail === "string" ? body.detail : null;
    super(error.message || detail || `The server answered ${status}.`);
    this.name = "ApiError";
    this.status = status;
    this.type = error.type || null;
    this.code = error.code || null;
    this.param = error.param || null;
    // Retry-After is either seconds or an HTTP date (RFC 9110 section 10.2.3).
    this.retryAfter = parseRetryAfter(headers && headers.get("Retry-After"));
  }
}

function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

/** A random idempotency key; crypto.randomUUID exists only in secure contexts. */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Api {
  constructor(key) {
    this.key = key;
  }

  async fetch(path, { method = "GET", json, headers = {}, signal } = {}) {
    const init = { method, signal, headers: { Authorization: `Bearer ${this.key}`, ...headers } };
    if (json !== undefined) {
      init.body = JSON.stringify(json);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        // A proxy's HTML error page, or an empty body: the status says enough.
      }
      throw new ApiError(response.status, body, response.headers);
    }
    return response;
  }

  async json(path, options) {
    const response = await this.fetch(path, options);
    return { body: await response.json(), headers: response.headers };
  }

  listVideos({ after = null, limit = 12 } = {}) {
    const query = new URLSearchParams({ limit: String(limit), order: "desc" });
    if (after) query.set("after", after);
    return this.json(`/v1/videos?${query}`).then((r) => r.body);
  }

  models() {
    return this.json("/v1/models").then((r) => r.body);
  }

  createVideo(fields) {
    return this.json("/v1/videos", {
      method: "POST",
      json: fields,
      headers: { "Idempotency-Key": newIdempotencyKey() },
    }).then((r) => r.body);
  }

  getVideo(id, signal) {
    return this.json(`/v1/videos/${encodeURIComponent(id)}`, { signal });
  }

  cancel(id) {
    return this.json(`/v1/videos/${encodeURIComponent(id)}/cancel`, { method: "POST" }).then((r) => r.body);
  }

  remove(id) {
    return this.json(`/v1/videos/${encodeURIComponent(id)}`, { method: "DELETE" }).then((r) => r.body);
  }

  remix(id, prompt) {
    return this.json(`/v1/videos/${encodeURIComponent(id)}/remix`, {
      method: "POST",
      json: { prompt },
      headers: { "Idempotency-Key": newIdempotencyKey() },
    }).then((r) => r.body);
  }

  /** An asset (video, thumbnail, spritesheet) as a Blob: a <video src> cannot carry the Authorization header. */
  async content(id, variant, signal) {
    const query = new URLSearchParams({ variant });
    const response = await this.fetch(`/v1/videos/${encodeURIComponent(id)}/content?${query}`, { signal });
    return response.blob();
  }

  /**
   * The job's Server-Sent Events, parsed from a fetch() body (EventSource cannot send
   * an Authorization header). Yields {event, data, id}; returns when the server closes.
   */
  async *events(id, signal) {
    const response = await this.fetch(`/v1/videos/${encodeURIComponent(id)}/events`, {
      headers: { Accept: "text/event-stream" },
      signal,
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        yield* parser.push(value);
      }
      yield* parser.push("\n\n");
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

/** The event-stream format of the HTML standard (section 9.2.6), fed in arbitrary chunks. */
export class SseParser {
  constructor() {
    this.buffer = "";
    this.reset();
  }

  reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  *push(chunk) {
    this.buffer += chunk;
    // Lines end in CRLF, LF or CR; a CR at the very end may be the first half of a CRLF.
    const lines = this.buffer.split(/\r\n|\n|\r(?!$)/);
    this.buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) {
          yield { event: this.event || "message", data: this.data.join("\n"), id: this.id };
        }
        this.reset();
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id") this.id = value;
    }
  }
}
