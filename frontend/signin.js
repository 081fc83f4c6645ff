// Signs the page in and out: the credentials the config asks for (an API key, or a Cognito user
// pool's hosted UI), the end of the hosted UI's redirect, the sign-in screen whenever the API wants
// credentials, and sign-out, which forgets them and this browser's conversations.
// No DOM (signin-view.js) and no network of its own (the ApiClient and user pool endpoints it is given).

import {
  ApiKeyCredentials,
  CognitoCredentials,
  SignInError,
  SignInGate,
  closableStorage,
  forgetLocalData,
  isSignInCallback,
  withoutCallbackParameters,
} from "./auth.js";

// The first check of the credentials; without an answer by then the chat shows what it has, and
// its own requests retry as usual.
const PROBE_TIMEOUT_MS = 5000;

export class SignIn {
  /**
   * @param {object} options
   * @param {{domain, clientId, redirectUri, scopes}|null} options.cognito  the user pool, or null for API keys
   * @param {Storage} options.storage  localStorage (or its in-memory stand-in)
   * @param {Storage} options.sessionStorage  this tab's storage, for a sign-in in progress
   * @param {UserPoolEndpoints|null} options.endpoints  the user pool's token endpoint (api.js)
   * @param {SignInView} options.view
   * @param {(key: string, params?: object) => string} options.t
   * @param {{search: string, href: string, assign(url), reload()}} options.location
   * @param {{replaceState(state, title, url)}} options.history
   */
  constructor({ cognito, storage, sessionStorage, endpoints, view, t, location, history }) {
    this.storage = storage;
    // What the chat's store writes through; closed on sign-out (see closableStorage).
    this.chatStorage = closableStorage(storage);
    this.credentials = cognito
      ? new CognitoCredentials(cognito, { storage, sessionStorage, endpoints })
      : new ApiKeyCredentials(storage);
    this.gate = new SignInGate(this.credentials, { onSignInNeeded: (reason) => this.ask(reason) });
    this.view = view;
    this.t = t;
    this.location = location;
    this.history = history;
    this.api = null;
  }

  /**
   * Finish a hosted-UI redirect if this load is one, then show the chat, or the sign-in screen
   * when the page cannot be signed in. With an API key (or none), one request asks the API.
   */
  async start(api) {
    this.api = api;
    this.view.bind({
      submitKey: (key) => this.submitKey(key),
      signInWithUserPool: () => this.goToUserPool(),
      signOut: () => this.signOut(),
    });
    if (this.credentials.kind === "cognito" && isSignInCallback(this.location.search)) {
      const search = this.location.search;
      // The code is single-use: a reload must not send it again.
      this.history.replaceState(null, "", withoutCallbackParameters(this.location.href));
      this.view.showSignIn(this.credentials.kind, "", { busy: true });
      try {
        await this.credentials.completeSignIn(search);
      } catch (error) {
        if (!(error instanceof SignInError)) throw error;
        if (!this.credentials.signedIn) {
          this.gate.wait(error);
          return;
        }
        // Already signed in (a stale or forged link, say): stay signed in as before.
        console.warn(`backchat: sign-in answer ignored: ${error.message}`);
      }
    }
    if (this.credentials.required && !this.credentials.signedIn) {
      // No request could succeed: ask at once rather than after a 401.
      this.gate.wait("required");
      return;
    }
    if (this.credentials.signedIn) this.view.showChat({ signedIn: true });
    this.probe();
  }

  /** Ask the API whether the page's credentials (or none) will do: a 401 brings the sign-in screen. */
  async probe() {
    try {
      await this.api.listSessions({ limit: 1 }, { timeoutMs: PROBE_TIMEOUT_MS });
    } catch {
      // No answer or an outage: the chat shows what this browser has, and its polls retry.
    }
    if (!this.gate.waiting) this.view.showChat({ signedIn: this.credentials.signedIn });
  }

  /** Show the sign-in screen: reason "required", "rejected", or a SignInError saying what failed. */
  ask(reason) {
    let message = "";
    if (reason === "rejected") message = this.t("signInAgain");
    else if (reason instanceof SignInError) message = this.t(reason.reason, { detail: reason.detail });
    this.view.showSignIn(this.credentials.kind, message);
  }

  /** Check a key with the API; keep it only if the API accepts it, and let waiting requests go. */
  async submitKey(raw) {
    const key = raw.trim();
    if (key === "") return;
    this.view.setBusy(true);
    try {
      await this.api.listSessions({ limit: 1 }, { authorization: ApiKeyCredentials.header(key) });
    } catch (error) {
      this.view.showSignIn(this.credentials.kind, error.status === 401
        ? this.t("keyRejected")
        : this.t("signInUnreachable", { detail: error.message }));
      return;
    }
    this.credentials.use(key);
    this.view.showChat({ signedIn: true });
    this.gate.signedIn();
  }

  /** Go to the hosted UI to sign in; it comes back to the redirect URI with a code. */
  async goToUserPool() {
    this.view.setBusy(true);
    let url;
    try {
      url = await this.credentials.authorizeUrl();
    } catch (error) {
      this.view.showSignIn(this.credentials.kind, this.t(error.reason || "signInRefused", { detail: error.message }));
      return;
    }
    this.location.assign(url);
  }

  /** Forget the credentials and every conversation kept in this browser; then start signed out. */
  async signOut() {
    this.chatStorage.close();
    const refreshToken = this.credentials.forget();
    forgetLocalData(this.storage);
    if (this.credentials.kind === "cognito") {
      await this.credentials.revoke(refreshToken);
      // The hosted UI ends its own session too, then sends the browser back to the page.
      this.location.assign(this.credentials.logoutUrl());
    } else {
      // Without the address's conversation: whoever signs in next starts from a new chat.
      this.history.replaceState(null, "", this.location.href.split("#")[0]);
      this.location.reload();
    }
  }
}
