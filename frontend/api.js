// The only module that talks to the network: backchat's HTTP API, as described in DESIGN.md, and
// the user pool's token endpoint when the page signs in with Cognito.

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
   * @param {{fetch?: typeof fetch, timeoutMs?: number, gate?: SignInGate}} options
   *   gate: where every request gets its Authorization header and, on a 401, waits until someone
   *   signs in, then goes again (auth.js); callers never see a 401 then.
   */
  constructor(baseUrl, { fetch = globalThis.fetch.bind(globalThis), timeoutMs = DEFAULT_TIMEOUT_MS, gate = null } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.fetch = fetch;
    this.timeoutMs = timeoutMs;
    this.gate = gate;
  }

  /**
   * Start a background run as a turn: of the conversation `conversationId`, or of a new one
   * without it (the server names it from the message). Resolves to {sessionId, conversationId,
   * status, model, createdAt}. The server builds the model's history from the earlier turns.
   */
  startSession({ message, conversationId }, { idempotencyKey } = {}) {
    const body = conversationId ? { message, conversationId } : { message };
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

  /**
   * Return the caller's newest sessions, {sessions, nextCursor}. With `authorization`, send that
   * header instead of the gate's and let a 401 through as an ApiError (checking a key before keeping it).
   */
  listSessions({ limit } = {}, { authorization, timeoutMs } = {}) {
    return this.request("GET", `/api/chat/sessions${pageQuery({ limit })}`, { authorization, timeoutMs });
  }

  /** Return a page of the caller's conversations, most recently active first: {conversations, nextCursor}. */
  listConversations({ limit, cursor } = {}) {
    return this.request("GET", `/api/chat/conversations${pageQuery({ limit, cursor })}`);
  }

  /** Return a conversation and a page of its turns, oldest first: {id, title, ..., turns, nextCursor}. */
  getConversation(conversationId, { limit, cursor } = {}) {
    return this.request("GET", `${conversationPath(conversationId)}${pageQuery({ limit, cursor })}`);
  }

  /** Give a conversation a new title; resolves to the conversation. */
  renameConversation(conversationId, title) {
    return this.request("PATCH", conversationPath(conversationId), { body: { title } });
  }

  /** Delete a conversation (its running turn is cancelled); resolves to null (204). */
  deleteConversation(conversationId) {
    return this.request("DELETE", conversationPath(conversationId), { expectBody: false });
  }

  async request(method, path, { body, headers = {}, timeoutMs, authorization, expectBody = true } = {}) {
    const gated = authorization === undefined && this.gate !== null;
    for (;;) {
      const credential = gated ? await this.gate.authorization() : authorization;
      const response = await send(this.fetch, `${method} ${path}`, this.baseUrl + path, {
        method,
        headers: {
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          ...(credential ? { Authorization: credential } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      }, timeoutMs ?? this.timeoutMs);
      const payload = await readJson(response);
      if (response.status === 401 && gated) {
        // Nothing was done: wait until someone signs in, then send the same request again.
        await this.gate.rejected(credential);
        continue;
      }
      if (!response.ok) {
        const message = (payload && payload.Message) || `${response.status} ${response.statusText}`.trim();
        throw new ApiError(message, { status: response.status, code: (payload && payload.Code) || "HttpError" });
      }
      if (payload === null && expectBody) {
        // A cut-off body is as good as no answer: the same request is worth retrying.
        throw new ApiError(`${method} ${path} answered without a JSON body`, { code: "BadResponse" });
      }
      return payload;
    }
  }
}

/**
 * A user pool's OAuth 2.0 endpoints (Cognito's hosted UI domain): the token endpoint, which
 * answers a form-encoded POST with JSON, and token revocation. Errors keep the OAuth `error` code.
 */
export class UserPoolEndpoints {
  /**
   * @param {string} domain  e.g. "https://backchat-dev.auth.eu-west-1.amazoncognito.com"
   */
  constructor(domain, { fetch = globalThis.fetch.bind(globalThis), timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    this.domain = domain.replace(/\/+$/, "");
    this.fetch = fetch;
    this.timeoutMs = timeoutMs;
  }

  /** POST form fields to /oauth2/token; resolve to the token response. */
  requestTokens(fields) {
    return this.post("/oauth2/token", fields);
  }

  /** POST a refresh token to /oauth2/revoke, so it cannot mint tokens after sign-out. */
  revoke(fields) {
    return this.post("/oauth2/revoke", fields, { expectJson: false });
  }

  async post(path, fields, { expectJson = true } = {}) {
    const response = await send(this.fetch, `POST ${path}`, this.domain + path, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields).toString(),
      cache: "no-store",
      credentials: "omit",
    }, this.timeoutMs);
    const payload = await readJson(response);
    if (!response.ok) {
      const code = (payload && payload.error) || "HttpError";
      const message = (payload && payload.error_description) || code;
      throw new ApiError(message, { status: response.status, code });
    }
    if (expectJson && payload === null) {
      throw new ApiError(`POST ${path} answered without a JSON body`, { code: "BadResponse" });
    }
    return payload;
  }
}

function conversationPath(conversationId) {
  return `/api/chat/conversations/${encodeURIComponent(conversationId)}`;
}

/** Return "?limit=..&cursor=.." with the parameters given, or "" for none. */
function pageQuery({ limit, cursor }) {
  const query = new URLSearchParams();
  if (limit) query.set("limit", String(limit));
  if (cursor) query.set("cursor", cursor);
  const text = query.toString();
  return text ? `?${text}` : "";
}

/** fetch with a timeout; no answer at all becomes an ApiError with status 0. */
async function send(fetch, what, url, init, timeoutMs) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    return await fetch(url, { ...init, signal: controller.signal });
  } catch (error) {
    const reason = error && error.name === "AbortError" ? "timed out" : "failed";
    throw new ApiError(`${what} ${reason}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Return the response's JSON body, or null for an empty or non-JSON one. */
async function readJson(response) {
  try {
    return await response.json();
  } catch {
    // An empty or non-JSON body: a proxy's error page, say. The status still tells what happened.
    return null;
  }
}
