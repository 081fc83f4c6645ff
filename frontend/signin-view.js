// The sign-in screen and the Sign out button: the DOM that signing in touches (view.js has the
// chat's). Its static words are translated with the rest of the page by view.js.

export class SignInView {
  /**
   * @param {Document} document
   * @param {(key: string, params?: object) => string} t  the translator from i18n.js
   */
  constructor(document, t) {
    this.t = t;
    const find = (testId) => document.querySelector(`[data-testid="${testId}"]`);
    this.el = {
      app: find("app"),
      screen: find("sign-in"),
      message: find("sign-in-message"),
      keyForm: find("api-key-form"),
      keyInput: find("api-key-input"),
      keySubmit: find("api-key-submit"),
      userPool: find("user-pool-sign-in"),
      userPoolButton: find("user-pool-button"),
      signOut: find("sign-out"),
    };
  }

  /** Connect the user's actions: handlers.submitKey(key), signInWithUserPool(), signOut(). */
  bind(handlers) {
    const { el } = this;
    el.keyForm.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!el.keySubmit.disabled) handlers.submitKey(el.keyInput.value);
    });
    el.userPoolButton.addEventListener("click", () => handlers.signInWithUserPool());
    el.signOut.addEventListener("click", () => {
      el.signOut.disabled = true;
      handlers.signOut();
    });
  }

  /**
   * Show the sign-in screen instead of the chat: the key form ("apikey") or the user pool's
   * button ("cognito"), with a message (empty: none).
   */
  showSignIn(kind, message, { busy = false } = {}) {
    const { el } = this;
    el.app.hidden = true;
    el.screen.hidden = false;
    el.keyForm.hidden = kind !== "apikey";
    el.userPool.hidden = kind !== "cognito";
    el.message.textContent = message;
    el.message.hidden = message === "";
    el.keyInput.value = "";
    this.setBusy(busy);
    if (kind === "apikey") el.keyInput.focus();
    else el.userPoolButton.focus();
  }

  /** Show the chat; Sign out is offered when there are credentials to forget. */
  showChat({ signedIn }) {
    const { el } = this;
    el.screen.hidden = true;
    el.app.hidden = false;
    el.signOut.hidden = !signedIn;
    el.signOut.disabled = false;
  }

  setBusy(busy) {
    const { el } = this;
    el.keySubmit.disabled = busy;
    el.userPoolButton.disabled = busy;
    el.screen.setAttribute("aria-busy", String(busy));
    for (const button of [el.keySubmit, el.userPoolButton]) button.textContent = this.t(busy ? "signingIn" : "signIn");
  }
}
