// Wires store -> runs -> view: sends turns, follows every unfinished run, resumes them on load.

import * as config from "./config.js";
import { ApiClient, UserPoolEndpoints } from "./api.js";
import { chooseLocale, translator } from "./i18n.js";
import { backoffDelay, POLL_DEFAULTS, SessionPoller } from "./poller.js";
import { applyEvents, ChatStore, historyBefore, isTerminal, memoryStorage, STORAGE_KEYS } from "./store.js";
import { SignIn } from "./signin.js";
import { SignInView } from "./signin-view.js";
import { ChatView } from "./view.js";

const CANCEL_ATTEMPTS = 5;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A start that got no answer (or a gateway's) may be sent again: the Idempotency-Key makes it safe. */
function startMayBeRetried(error) {
  return error.isNetworkError || error.status === 502 || error.status === 504;
}

class ChatApp {
  constructor({ api, store, view, t, pollOptions = POLL_DEFAULTS }) {
    this.api = api;
    this.store = store;
    this.view = view;
    this.t = t;
    this.pollOptions = pollOptions;
    this.pollers = new Map();
    // Keys of the requests that are failing right now; "Reconnecting…" shows while any are.
    this.unreachable = new Set();
  }

  /** Load the stored state, show it, and resume every unfinished run from its last seq. */
  start() {
    this.store.load();
    this.view.bind({
      send: (text) => this.send(text),
      stop: () => this.stop(),
      retry: (turnId) => this.retry(turnId),
      newChat: () => this.newChat(),
      select: (id) => this.select(id),
      remove: (id) => this.remove(id),
      wake: () => this.pollers.forEach((poller) => poller.wake()),
    });
    this.render();
    for (const { conversation, turn } of this.store.unfinished()) {
      if (turn.sessionId) {
        this.follow(turn);
        if (turn.cancelRequested) this.cancel(turn);
      } else {
        this.startRun(conversation, turn);
      }
    }
    this.view.focusInput();
  }

  send(text) {
    let conversation = this.store.current();
    if (conversation && this.activeTurn(conversation)) return;
    const isNew = !conversation;
    if (isNew) conversation = this.store.createConversation(text);
    const turn = this.store.addTurn(conversation, text);
    this.view.clearInput();
    if (isNew) {
      this.store.save();
      this.render();
    } else {
      this.changed(turn);
      this.view.scrollToBottom();
    }
    this.startRun(conversation, turn);
  }

  /** Ask the current conversation's running turn to stop; the run ends with a `cancelled` event. */
  stop() {
    const conversation = this.store.current();
    const turn = conversation && this.activeTurn(conversation);
    if (!turn || turn.cancelRequested) return;
    turn.cancelRequested = true;
    this.changed(turn);
    // A turn still being started is cancelled as soon as its session id arrives (startRun).
    if (turn.sessionId) this.cancel(turn);
  }

  /** Send a failed turn again, with the same message and history, as a new session. */
  retry(turnId) {
    const found = this.store.locate(turnId);
    if (!found || !this.retryable(found.conversation, found.turn)) return;
    this.store.restartTurn(found.conversation, found.turn);
    this.changed(found.turn);
    this.view.scrollToBottom();
    this.startRun(found.conversation, found.turn);
  }

  newChat() {
    this.store.currentId = null;
    this.store.save();
    this.render();
    this.view.focusInput();
  }

  select(conversationId) {
    this.store.currentId = conversationId;
    this.store.save();
    this.render();
  }

  /** Forget a conversation on this device. Its runs go on server-side; this page stops following them. */
  remove(conversationId) {
    for (const turn of this.store.deleteConversation(conversationId)) this.unfollow(turn);
    this.store.save();
    this.render();
  }

  /** Start a turn's session, retrying while the API cannot be reached; then follow it. */
  async startRun(conversation, turn) {
    const request = {
      message: turn.user,
      history: historyBefore(conversation, turn),
      conversationId: conversation.id,
      title: conversation.title,
    };
    const key = `start:${turn.id}`;
    try {
      // A turn deleted meanwhile is not started.
      for (let attempt = 1; this.store.locate(turn.id); attempt += 1) {
        let started;
        try {
          started = await this.api.startSession(request, { idempotencyKey: turn.idempotencyKey });
        } catch (error) {
          if (startMayBeRetried(error)) {
            this.reachable(key, false);
            await sleep(backoffDelay(attempt, this.pollOptions));
            continue;
          }
          if (this.store.locate(turn.id)) {
            this.store.fail(turn, error.message);
            this.changed(turn);
          }
          return;
        }
        if (!this.store.locate(turn.id)) return;
        this.store.markStarted(turn, started);
        this.changed(turn);
        this.follow(turn);
        if (turn.cancelRequested) this.cancel(turn);
        return;
      }
    } finally {
      this.reachable(key, true);
    }
  }

  /** Poll a started turn's events from its last applied seq until its log is complete. */
  follow(turn) {
    if (this.pollers.has(turn.id)) return;
    const key = `poll:${turn.id}`;
    const poller = new SessionPoller({
      sessionId: turn.sessionId,
      after: turn.lastSeq,
      getEvents: (sessionId, options) => this.api.getEvents(sessionId, options),
      options: this.pollOptions,
      onPage: (page) => {
        const changed = applyEvents(turn, page.events || []);
        const complete = isTerminal(page.status) && !page.hasMore;
        if (complete) this.store.settle(turn, page.status);
        if (changed || complete) this.changed(turn);
      },
      onFailed: (error) => {
        this.store.fail(turn, error.status === 404 ? this.t("sessionGone") : error.message);
        this.changed(turn);
      },
      onConnection: (ok) => this.reachable(key, ok),
    });
    this.pollers.set(turn.id, poller);
    poller.run().finally(() => {
      if (this.pollers.get(turn.id) === poller) this.pollers.delete(turn.id);
      this.reachable(key, true);
    });
  }

  unfollow(turn) {
    const poller = this.pollers.get(turn.id);
    if (poller) poller.stop();
  }

  async cancel(turn) {
    const key = `cancel:${turn.id}`;
    for (let attempt = 1; attempt <= CANCEL_ATTEMPTS; attempt += 1) {
      try {
        await this.api.cancelSession(turn.sessionId);
        this.reachable(key, true);
        return;
      } catch (error) {
        if (!error.retryable || attempt === CANCEL_ATTEMPTS) break;
        this.reachable(key, false);
        await sleep(backoffDelay(attempt, this.pollOptions));
      }
    }
    this.reachable(key, true);
    // The request did not get through (or the run is gone): offer Stop again.
    if (!isTerminal(turn.status)) {
      turn.cancelRequested = false;
      this.changed(turn);
    }
  }

  /** Save after a turn changed and show the change. */
  changed(turn) {
    this.store.save();
    const found = this.store.locate(turn.id);
    if (found && found.conversation.id === this.store.currentId) {
      this.view.updateTurn(turn, this.retryable(found.conversation, turn));
    }
    this.renderChrome();
  }

  render() {
    const conversation = this.store.current();
    this.view.showConversation(conversation, (turn) => this.retryable(conversation, turn));
    this.renderChrome();
  }

  /** The sidebar and the composer, which depend on which conversations are running. */
  renderChrome() {
    const running = new Set(this.store.unfinished().map(({ conversation }) => conversation.id));
    this.view.renderConversations(this.store.sorted(), this.store.currentId, running);
    const conversation = this.store.current();
    const active = conversation && this.activeTurn(conversation);
    this.view.setComposer({ running: Boolean(active), stopping: Boolean(active && active.cancelRequested) });
  }

  activeTurn(conversation) {
    return conversation.turns.find((turn) => !isTerminal(turn.status)) || null;
  }

  /** Retry is offered on a failed last turn while nothing else in its conversation runs. */
  retryable(conversation, turn) {
    const turns = conversation.turns;
    return turn.status === "error" && turns[turns.length - 1] === turn && !this.activeTurn(conversation);
  }

  reachable(key, ok) {
    if (ok) this.unreachable.delete(key);
    else this.unreachable.add(key);
    this.view.setConnection(this.unreachable.size === 0);
  }
}

function browserStorage(name = "localStorage") {
  try {
    const storage = window[name];
    storage.getItem(STORAGE_KEYS.current);
    return storage;
  } catch {
    // Storage disabled (some private modes): the page works, it just cannot resume after a reload.
    return memoryStorage();
  }
}

const locale = chooseLocale(navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language]);
const t = translator(locale);
// First: it translates the page's static words, the sign-in screen's included.
const view = new ChatView(document, t, locale);
// A config.js written before sign-in existed has no COGNITO: API keys (or no sign-in) then.
const cognito = config.COGNITO || null;
const signIn = new SignIn({
  cognito,
  storage: browserStorage(),
  sessionStorage: browserStorage("sessionStorage"),
  endpoints: cognito ? new UserPoolEndpoints(cognito.domain) : null,
  view: new SignInView(document, t),
  t,
  location: window.location,
  history: window.history,
});
const api = new ApiClient(config.API_BASE || "", { gate: signIn.gate });
await signIn.start(api);
new ChatApp({ api, store: new ChatStore(signIn.chatStorage), view, t }).start();
