// The only module that talks to the network: backchat's HTTP API, as described in DESIGN.md.

const DEFAULT_TIMEOUT_MS = 20_000;

/** A failed API call: an HTTP error answer (status, Code, Message) or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(message, { status = 0, code = "NetworkError" } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  /** True when nothing reached the server or it answered that it could not serve us. */
  get isNetworkError() {
    return this.status === 0;
  }

  /** True when the same request may succeed later (no answer, timeout, rate limit, outage). */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

export class ApiClient {
  /**
   * @param {string} baseUrl  "" for the page's own origin, else e.g. "https://api.example.com".
   * @param {{fetch?: typeof fetch, timeoutMs?: number}} options
   */
  constructor(baseUrl, { fetch = globalThis.fetch.bind(globalThis), timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.fetch = fetch;
    this.timeoutMs = timeoutMs;
  }

  /** Start a background run; resolves to {sessionId, status, model, createdAt}. */
  startSession({ message, history, conversationId, title, model }, { idempotencyKey } = {}) {
    const body = { message, history };
    if (conversationId) body.conversationId = conversationId;
    if (title) body.title = title;
    if (model) body.model = model;
    const headers = idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {};
    return this.request("POST", "/api/chat/session", { body, headers });
  }

  /** Return the session object (status, answer, token counts...). */
  getSession(sessionId) {
    return this.request("GET", `/api/chat/session/${encodeURIComponent(sessionId)}`);
  }

  /**
   * Return the events after seq `after`, oldest first: {sessionId, status, events, lastSeq, hasMore}.
   * `wait` (seconds) asks the server to long-poll; it is only sent when positive.
   */
  getEvents(sessionId, { after = 0, limit, wait = 0 } = {}) {
    const query = new URLSearchParams({ after: String(after) });
    if (limit) query.set("limit", String(limit));
    if (wait > 0) query.set("wait", String(wait));
    const path = `/api/chat/session/${encodeURIComponent(sessionId)}/events?${query}`;
    return this.request("GET", path, { timeoutMs: this.timeoutMs + wait * 1000 });
  }

  /** Ask the run to stop; resolves to {id, status}. Idempotent. */
  cancelSession(sessionId) {
    return this.request("POST", `/api/chat/session/${encodeURIComponent(sessionId)}/cancel`);
  }

  async request(method, path, { body, headers = {}, timeoutMs = this.timeoutMs } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let response;
    try {
      response = await this.fetch(this.baseUrl + path, {
        method,
        headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (error) {
      const reason = error && error.name === "AbortError" ? "timed out" : "failed";
      throw new ApiError(`${method} ${path} ${reason}`);
    } finally {
      clearTimeout(timer);
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // An empty or non-JSON body: a proxy's error page, say. The status still tells what happened.
    }
    if (!response.ok) {
      const message = (payload && payload.Message) || `${response.status} ${response.statusText}`.trim();
      throw new ApiError(message, { status: response.status, code: (payload && payload.Code) || "HttpError" });
    }
    if (payload === null) {
      // A cut-off body is as good as no answer: the same request is worth retrying.
      throw new ApiError(`${method} ${path} answered without a JSON body`, { code: "BadResponse" });
    }
    return payload;
  }
}
