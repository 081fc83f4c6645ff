// Wires store -> server -> view: the conversations are the server's (sync.js reads them, the
// store caches them), the page's turns run through runs.js, and the view shows both.

import * as config from "./config.js";
import { ApiClient, UserPoolEndpoints } from "./api.js";
import { chooseLocale, translator } from "./i18n.js";
import { POLL_DEFAULTS } from "./poller.js";
import { isRunning } from "./reconcile.js";
import { TurnRuns } from "./runs.js";
import { memoryStorage } from "./storage.js";
import { ChatStore, STORAGE_KEYS } from "./store.js";
import { ServerSync } from "./sync.js";
import { isTerminal } from "./turn.js";
import { SignIn } from "./signin.js";
import { SignInView } from "./signin-view.js";
import { ChatView } from "./view.js";

class ChatApp {
  constructor({ api, store, view, t, pollOptions = POLL_DEFAULTS }) {
    this.api = api;
    this.store = store;
    this.view = view;
    this.t = t;
    // Keys of the requests that are failing right now; "Reconnecting…" shows while any are.
    this.unreachable = new Set();
    const reachable = (key, ok) => this.reachable(key, ok);
    this.runs = new TurnRuns({
      api, store, reachable, pollOptions,
      on: {
        changed: (turn) => this.changed(turn),
        started: () => this.started(),
        refused: (conversation, turn, error) => this.refused(conversation, turn, error),
        ended: (conversation, turn) => this.ended(conversation, turn),
        lost: (conversation, turn) => this.lost(conversation, turn),
      },
    });
    this.sync = new ServerSync({
      api, store, reachable, pollOptions,
      on: {
        listed: (dropped) => this.listed(dropped),
        read: (conversation, dropped) => this.read(conversation, dropped),
        gone: (id) => this.gone(id),
        failed: (error) => this.view.showNotice(this.t("readFailed", { message: error.message })),
      },
      busy: () => this.store.conversations.some(
        (conversation) => isRunning(conversation) && !this.store.hasUnfinished(conversation)),
      visible: () => this.view.isVisible(),
    });
  }

  /**
   * Show the cached conversations at once, resume the runs the cache knows, then read the list
   * and the conversation on screen from the server and follow whatever runs there.
   */
  start() {
    this.store.load();
    const addressed = this.view.addressedConversation();
    if (addressed) this.store.currentId = addressed;
    this.view.bind({
      send: (text) => this.send(text),
      stop: () => this.stop(),
      retry: (turnId) => this.retry(turnId),
      newChat: () => this.newChat(),
      select: (id) => this.select(id),
      rename: (id, title) => this.rename(id, title),
      remove: (id) => this.remove(id),
      loadMore: () => this.sync.loadMore(),
      wake: () => this.wake(),
    });
    // Nothing is written before something changes: a signed-out page must leave storage empty.
    this.show(this.store.currentId);
    for (const { conversation, turn } of this.store.unfinished()) {
      if (!turn.sessionId) this.runs.start(conversation, turn);
      else this.resume(turn);
    }
    this.sync.refreshList();
    this.view.focusInput();
  }

  send(text) {
    let conversation = this.store.current();
    if (conversation && this.activeTurn(conversation)) return;
    if (!conversation) conversation = this.store.createDraft(text);
    this.view.clearInput();
    this.startTurn(conversation, text);
  }

  startTurn(conversation, text) {
    const turn = this.store.addTurn(conversation, text);
    this.store.save();
    this.render();
    this.view.scrollToBottom();
    this.runs.start(conversation, turn);
  }

  /** Ask the current conversation's running turn to stop; the run ends with a `cancelled` event. */
  stop() {
    const conversation = this.store.current();
    const turn = conversation && this.activeTurn(conversation);
    if (!turn || turn.cancelRequested) return;
    turn.cancelRequested = true;
    this.changed(turn);
    // A turn still being started is cancelled as soon as its session id arrives (runs.start).
    if (turn.sessionId) this.runs.cancel(turn);
  }

  /**
   * Send a failed last turn's message again: as a new turn of the conversation if the server has
   * the failed one, else (its start was refused) as the same turn with a new Idempotency-Key.
   */
  retry(turnId) {
    const found = this.store.locate(turnId);
    if (!found || !this.retryable(found.conversation, found.turn)) return;
    const { conversation, turn } = found;
    if (turn.sessionId) {
      this.startTurn(conversation, turn.user);
      return;
    }
    this.store.restartTurn(turn);
    this.changed(turn);
    this.runs.start(conversation, turn);
  }

  newChat() {
    this.select(null);
    this.view.focusInput();
  }

  select(id) {
    this.show(id);
    this.store.save();
  }

  /** Show a conversation (null: a new chat) from the cache, then read it from the server. */
  show(id) {
    const conversation = this.store.open(id);
    this.render();
    if (conversation && !conversation.draft) this.sync.readConversation(conversation.id);
  }

  /** Give a conversation a new name on the server; the list shows it at once. */
  async rename(id, rawTitle) {
    const conversation = this.store.conversation(id);
    const title = rawTitle.trim();
    if (!conversation || conversation.draft || title === "" || title === conversation.title) return;
    const before = conversation.title;
    conversation.title = title;
    this.store.touch(conversation);
    this.saveAndRender();
    try {
      const renamed = await this.api.renameConversation(id, title);
      conversation.title = renamed.title;
    } catch (error) {
      if (error.status === 404) {
        this.gone(id);
        return;
      }
      conversation.title = before;
      this.view.showNotice(this.t("renameFailed", { message: error.message }));
    }
    this.saveAndRender();
    this.sync.refreshList();
  }

  /**
   * Delete a conversation on the server (the user has confirmed): its running turn is cancelled
   * there, and it is gone for every device. A draft is only forgotten here: it has no server copy
   * yet (if its start is answered later, runs.js deletes what it created).
   */
  async remove(id) {
    const conversation = this.store.conversation(id);
    if (!conversation) return;
    if (!conversation.draft) {
      try {
        await this.api.deleteConversation(id);
      } catch (error) {
        if (error.status !== 404) {
          this.view.showNotice(this.t("deleteFailed", { message: error.message }));
          return;
        }
      }
    }
    this.forget(id);
    this.sync.refreshList();
  }

  /** The network, the tab or the focus came back: poll at once and read the list again. */
  wake() {
    this.runs.wake();
    this.sync.refreshList();
  }

  /** Follow a turn the server runs (and send a Stop the page could not send before it went away). */
  resume(turn) {
    this.runs.follow(turn);
    if (turn.cancelRequested) this.runs.cancel(turn);
  }

  /** A turn's session exists (and, for a draft, the conversation has the server's id). */
  started() {
    this.saveAndRender();
    this.sync.refreshList();
  }

  /** A start was refused: say why on the turn; if the conversation runs or is gone, read it. */
  refused(conversation, turn, error) {
    if (error.status === 409) this.store.fail(turn, this.t("turnStillRunning"));
    else if (error.status === 404) this.store.fail(turn, this.t("conversationGone"));
    else this.store.fail(turn, error.message);
    this.changed(turn);
    if ((error.status === 409 || error.status === 404) && !conversation.draft) {
      this.sync.readConversation(conversation.id);
    }
  }

  ended(conversation, turn) {
    this.store.noteEnded(conversation, turn);
    this.changed(turn);
    this.sync.refreshList();
  }

  /** The server no longer knows a turn's session: read its conversation, which may be gone too. */
  lost(conversation, turn) {
    this.store.fail(turn, this.t("sessionGone"));
    this.changed(turn);
    this.sync.readConversation(conversation.id);
  }

  /** The list was read: stop following what left it; read the conversation on screen if it moved on. */
  listed(dropped) {
    for (const conversation of dropped) this.unfollowAll(conversation.turns);
    const current = this.store.current();
    if (current && current.turns && current.lastSessionId
        && !current.turns.some((turn) => turn.sessionId === current.lastSessionId)) {
      this.sync.readConversation(current.id);
    }
    this.saveAndRender();
  }

  /** A conversation was read: follow its running turns, stop following the ones it no longer has. */
  read(conversation, dropped) {
    this.unfollowAll(dropped);
    for (const turn of conversation.turns) {
      if (!isTerminal(turn.status) && turn.sessionId) this.resume(turn);
    }
    this.saveAndRender();
  }

  /** The server does not have a conversation (any more): forget it here. */
  gone(id) {
    if (id === this.store.currentId) this.view.showNotice(this.t("conversationGone"));
    this.forget(id);
  }

  forget(id) {
    this.unfollowAll(this.store.removeConversation(id));
    this.saveAndRender();
  }

  unfollowAll(turns) {
    for (const turn of turns || []) this.runs.unfollow(turn);
  }

  /** Save after a turn changed and show the change. */
  changed(turn) {
    this.store.save();
    const found = this.store.locate(turn.id);
    if (found && found.conversation.id === this.store.currentId) {
      // An ended turn can change what the others offer (Retry), so the whole conversation then.
      if (isTerminal(turn.status)) this.showCurrent();
      else this.view.updateTurn(turn, this.retryable(found.conversation, turn));
    }
    this.renderChrome();
  }

  saveAndRender() {
    this.store.save();
    this.render();
  }

  render() {
    this.showCurrent();
    this.renderChrome();
  }

  showCurrent() {
    const conversation = this.store.current();
    this.view.showConversation(conversation, (turn) => this.retryable(conversation, turn));
    this.view.showAddress(conversation && !conversation.draft ? conversation.id : null);
  }

  /** The sidebar and the composer, which depend on which conversations are running. */
  renderChrome() {
    const running = new Set(this.store.conversations.filter(isRunning).map((conversation) => conversation.id));
    this.view.renderConversations(this.store.sorted(), this.store.currentId, running, { hasMore: this.sync.hasMore });
    const conversation = this.store.current();
    const active = conversation && this.activeTurn(conversation);
    this.view.setComposer({ running: Boolean(active), stopping: Boolean(active && active.cancelRequested) });
  }

  activeTurn(conversation) {
    return (conversation.turns || []).find((turn) => !isTerminal(turn.status)) || null;
  }

  /** Retry is offered on a failed last turn while nothing else in its conversation runs. */
  retryable(conversation, turn) {
    const turns = conversation.turns || [];
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
