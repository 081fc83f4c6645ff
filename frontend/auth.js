// Who the page is signed in as: an API key, or a Cognito user pool's tokens (authorization code
// with PKCE, refreshed before they expire), and the gate every API request passes. Pure: no DOM and
// no network; the storages and the user pool's token endpoint (api.js) are passed in, so node can
// load it.

import { readJson, removeKey, writeJson } from "./storage.js";

/** localStorage: the signed-in credential, {kind: "apikey", key} or {kind: "cognito", ...tokens}. */
export const AUTH_STORAGE_KEY = "backchat.v1.auth";
/** sessionStorage: this tab's sign-in in progress (state and PKCE verifier), until the redirect returns. */
export const SIGN_IN_STORAGE_KEY = "backchat.v1.signIn";
/** Every key the page keeps starts with this; sign-out removes them all. */
export const LOCAL_DATA_PREFIX = "backchat.";

// Refresh this long before the ID token expires, or a quarter of its lifetime if that is shorter.
const REFRESH_MARGIN_MS = 60_000;
const DEFAULT_SCOPES = Object.freeze(["openid", "email", "profile"]);
// The query parameters the hosted UI sends back to the redirect URI.
const CALLBACK_PARAMETERS = Object.freeze(["code", "state", "error", "error_description"]);

/** Sign-in could not be completed; `reason` is an i18n key, `detail` the provider's words if any. */
export class SignInError extends Error {
  constructor(reason, detail = "") {
    super(detail || reason);
    this.name = "SignInError";
    this.reason = reason;
    this.detail = detail;
  }
}

/** Return bytes as base64url without padding (RFC 7636's encoding of the PKCE values). */
export function base64Url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Return `size` random bytes as base64url: 32 bytes make a 43-character PKCE verifier. */
export function randomToken(size = 32) {
  return base64Url(crypto.getRandomValues(new Uint8Array(size)));
}

/** Return the S256 code challenge of a verifier: base64url(SHA-256(verifier)). */
export async function codeChallenge(verifier) {
  if (!globalThis.crypto || !crypto.subtle) throw new SignInError("signInInsecure");
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64Url(new Uint8Array(digest));
}

/**
 * Return a JWT's claims, unverified, or {} if it is not a JWT. The page reads only the lifetime
 * from them (to know when to refresh); the API Gateway authorizer is what checks the signature.
 */
export function jwtClaims(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "="));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

/** Return true if the URL's query is the hosted UI coming back (a code or an error, with state). */
export function isSignInCallback(search) {
  const params = new URLSearchParams(search);
  return params.has("state") && (params.has("code") || params.has("error"));
}

/** Return the URL without the hosted UI's callback parameters (so a reload does not reuse a code). */
export function withoutCallbackParameters(href) {
  const url = new URL(href);
  for (const name of CALLBACK_PARAMETERS) url.searchParams.delete(name);
  return url.toString();
}

/** Remove every key the page keeps (credentials, conversations, unfinished runs) from a Storage. */
export function forgetLocalData(storage) {
  // The in-memory stand-in for disabled storage (storage.js) cannot list keys; it dies with the page.
  if (typeof storage.key !== "function") return;
  const keys = [];
  for (let index = 0; index < storage.length; index += 1) {
    const key = storage.key(index);
    if (key && key.startsWith(LOCAL_DATA_PREFIX)) keys.push(key);
  }
  for (const key of keys) storage.removeItem(key);
}

/**
 * Return a Storage whose writes can be switched off. After sign-out a run's last poll must not
 * write the signed-out owner's conversations back before the page goes away.
 */
export function closableStorage(storage) {
  let closed = false;
  return {
    getItem: (key) => storage.getItem(key),
    setItem: (key, value) => {
      if (!closed) storage.setItem(key, value);
    },
    removeItem: (key) => storage.removeItem(key),
    close: () => {
      closed = true;
    },
  };
}

/** An API key, kept in localStorage and sent as `Authorization: Bearer <key>`. */
export class ApiKeyCredentials {
  constructor(storage) {
    this.kind = "apikey";
    // The API may run in AUTH_MODE=none and need no key: requests go out without one and a 401
    // is what asks for it.
    this.required = false;
    // A key is only ever refused by a 401, which the gate sees itself.
    this.refused = false;
    this.storage = storage;
    const stored = readJson(storage, AUTH_STORAGE_KEY);
    this.key = stored && stored.kind === "apikey" && typeof stored.key === "string" ? stored.key : null;
  }

  get signedIn() {
    return this.key !== null;
  }

  /** Return the Authorization header to send, or null. */
  async authorization() {
    return this.current();
  }

  /** Return the header as it stands, without waiting. */
  current() {
    return this.key === null ? null : ApiKeyCredentials.header(this.key);
  }

  static header(key) {
    return `Bearer ${key}`;
  }

  /** Keep a key the API accepted. */
  use(key) {
    this.key = key;
    writeJson(this.storage, AUTH_STORAGE_KEY, { kind: "apikey", key });
  }

  forget() {
    this.key = null;
    removeKey(this.storage, AUTH_STORAGE_KEY);
  }
}

/**
 * A Cognito user pool's tokens from its hosted UI: authorization code flow with PKCE (S256), no
 * client secret. The ID token is what the API Gateway authorizer checks: it is sent as
 * `Authorization: <id token>`, without a scheme. It is refreshed with the refresh token before it
 * expires.
 */
export class CognitoCredentials {
  /**
   * @param {{domain: string, clientId: string, redirectUri: string, scopes?: string[]}} config
   * @param {{storage: Storage, sessionStorage: Storage, endpoints: {requestTokens(fields), revoke(fields)},
   *          now?: () => number}} options
   */
  constructor(config, { storage, sessionStorage, endpoints, now = () => Date.now() }) {
    this.kind = "cognito";
    this.required = true;
    this.config = { ...config, domain: config.domain.replace(/\/+$/, ""), scopes: config.scopes || DEFAULT_SCOPES };
    this.storage = storage;
    this.sessionStorage = sessionStorage;
    this.endpoints = endpoints;
    this.now = now;
    this.refreshing = null;
    // True once the user pool refused to refresh (refresh token expired or revoked): signed out by it.
    this.refused = false;
    const stored = readJson(storage, AUTH_STORAGE_KEY);
    this.tokens = stored && stored.kind === "cognito" && typeof stored.idToken === "string" ? stored : null;
  }

  get signedIn() {
    return this.tokens !== null;
  }

  /**
   * Return the hosted UI's authorize URL for a new sign-in; the state and the PKCE verifier are
   * kept in this tab's sessionStorage until the redirect comes back.
   */
  async authorizeUrl() {
    const state = randomToken(16);
    const verifier = randomToken(32);
    const challenge = await codeChallenge(verifier);
    writeJson(this.sessionStorage, SIGN_IN_STORAGE_KEY, { state, verifier });
    const query = new URLSearchParams({
      response_type: "code",
      client_id: this.config.clientId,
      redirect_uri: this.config.redirectUri,
      scope: this.config.scopes.join(" "),
      state,
      code_challenge: challenge,
      code_challenge_method: "S256",
    });
    return `${this.config.domain}/oauth2/authorize?${query}`;
  }

  /**
   * Finish a sign-in from the redirect's query: check `state`, exchange the code for tokens.
   * Raise SignInError when the answer is an error, is not for this tab's request, or the
   * exchange fails; the one-time state is used up either way.
   */
  async completeSignIn(search) {
    const params = new URLSearchParams(search);
    const pending = readJson(this.sessionStorage, SIGN_IN_STORAGE_KEY);
    removeKey(this.sessionStorage, SIGN_IN_STORAGE_KEY);
    if (!pending || typeof pending.state !== "string" || params.get("state") !== pending.state) {
      // Not the answer to this tab's request (forged, replayed, or another tab's): never exchanged.
      throw new SignInError("signInStateMismatch");
    }
    if (params.has("error")) {
      throw new SignInError("signInRefused", params.get("error_description") || params.get("error"));
    }
    let answer;
    try {
      answer = await this.endpoints.requestTokens({
        grant_type: "authorization_code",
        client_id: this.config.clientId,
        code: params.get("code") || "",
        redirect_uri: this.config.redirectUri,
        code_verifier: pending.verifier,
      });
    } catch (error) {
      throw new SignInError(error.isNetworkError ? "signInUnreachable" : "signInRefused", error.message);
    }
    this.keep(answer, null);
  }

  /** Return `Authorization: <id token>` to send, refreshed first if it is about to expire; null if signed out. */
  async authorization() {
    if (this.tokens !== null && this.now() >= this.refreshAt()) await this.refresh();
    return this.current();
  }

  /** Return the header as it stands, without refreshing. */
  current() {
    return this.tokens === null ? null : this.tokens.idToken;
  }

  refreshAt() {
    const margin = Math.min(REFRESH_MARGIN_MS, this.tokens.lifetimeMs / 4);
    return this.tokens.expiresAt - margin;
  }

  /**
   * Trade the refresh token for new ID and access tokens; concurrent callers share one request.
   * A refused refresh (expired or revoked) signs out; no answer leaves the tokens and raises the
   * ApiError, so the request is retried like any other that got no answer.
   */
  refresh() {
    if (this.refreshing === null) {
      this.refreshing = this.refreshOnce(this.tokens).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async refreshOnce(tokens) {
    let answer;
    try {
      answer = await this.endpoints.requestTokens({
        grant_type: "refresh_token",
        client_id: this.config.clientId,
        refresh_token: tokens.refreshToken,
      });
    } catch (error) {
      if (error.retryable) throw error;
      if (this.tokens === tokens) this.refuse();
      return;
    }
    if (this.tokens !== tokens) return; // signed out or in again meanwhile
    try {
      this.keep(answer, tokens.refreshToken);
    } catch {
      this.refuse();
    }
  }

  refuse() {
    this.forget();
    this.refused = true;
  }

  /** Keep a token response; Cognito sends no new refresh token on refresh, so the old one stays. */
  keep(answer, refreshToken) {
    if (!answer || typeof answer.id_token !== "string") throw new SignInError("signInRefused", "no ID token in the answer");
    const claims = jwtClaims(answer.id_token);
    // The lifetime from the token's own iat/exp and from expires_in, whichever is shorter, counted
    // on this browser's clock, so a skewed clock does not make every token look expired.
    const lifetimes = [Number(answer.expires_in) * 1000, (Number(claims.exp) - Number(claims.iat)) * 1000]
      .filter((value) => Number.isFinite(value) && value > 0);
    const lifetimeMs = lifetimes.length ? Math.min(...lifetimes) : REFRESH_MARGIN_MS;
    this.refused = false;
    this.tokens = {
      kind: "cognito",
      idToken: answer.id_token,
      accessToken: answer.access_token || null,
      refreshToken: answer.refresh_token || refreshToken,
      lifetimeMs,
      expiresAt: this.now() + lifetimeMs,
    };
    writeJson(this.storage, AUTH_STORAGE_KEY, this.tokens);
  }

  /**
   * Forget the tokens; return the refresh token that was kept (for `revoke`), or null.
   */
  forget() {
    const refreshToken = this.tokens ? this.tokens.refreshToken : null;
    this.tokens = null;
    removeKey(this.storage, AUTH_STORAGE_KEY);
    return refreshToken;
  }

  /** Revoke a refresh token at the user pool; best effort (sign-out goes on either way). */
  async revoke(refreshToken) {
    if (!refreshToken) return;
    try {
      await this.endpoints.revoke({ token: refreshToken, client_id: this.config.clientId });
    } catch (error) {
      console.warn("backchat: could not revoke the refresh token", error.message);
    }
  }

  /** Return the hosted UI's logout URL, which ends its own session and comes back to the page. */
  logoutUrl() {
    const query = new URLSearchParams({ client_id: this.config.clientId, logout_uri: this.config.redirectUri });
    return `${this.config.domain}/logout?${query}`;
  }
}

/**
 * Where every API request gets its Authorization header, and waits while nobody is signed in.
 * `onSignInNeeded(reason)` is called once per wait ("required": no credentials yet; "rejected":
 * the API refused the ones it had); `signedIn()` ends the wait and every waiting request goes again.
 */
export class SignInGate {
  constructor(credentials, { onSignInNeeded }) {
    this.credentials = credentials;
    this.onSignInNeeded = onSignInNeeded;
    this.waiting = null;
    this.release = null;
  }

  /** Resolve to the header a request should carry (null: none), waiting for a sign-in if one is needed. */
  async authorization() {
    for (;;) {
      if (this.waiting) await this.waiting;
      const header = await this.credentials.authorization();
      if (header !== null || !this.credentials.required) return header;
      await this.wait(this.credentials.refused ? "rejected" : "required");
    }
  }

  /** A request sent with `header` got a 401: resolve when there are credentials worth trying. */
  async rejected(header) {
    if (header !== this.credentials.current()) return; // signed in (again) meanwhile: try the new ones
    if (header !== null) this.credentials.forget();
    await this.wait(header === null ? "required" : "rejected");
  }

  wait(reason) {
    if (!this.waiting) {
      this.waiting = new Promise((resolve) => {
        this.release = resolve;
      });
      this.onSignInNeeded(reason);
    }
    return this.waiting;
  }

  /** Credentials were just stored: let every waiting request go again. */
  signedIn() {
    const release = this.release;
    this.waiting = null;
    this.release = null;
    if (release) release();
  }
}
