// Runs the page's turns on the server: starts each turn's session (a start is safe to send again:
// one Idempotency-Key per attempt), follows its events until its log is complete, and cancels it.
// No DOM; the network goes through the ApiClient it is given.

import { POLL_DEFAULTS, SessionPoller } from "./poller.js";
import { untilAnswered } from "./retry.js";
import { applyEvents, isTerminal } from "./turn.js";

const CANCEL_ATTEMPTS = 5;

/** A start that got no answer (or a gateway's) may be sent again: the Idempotency-Key makes it safe. */
function startMayBeRetried(error) {
  return error.isNetworkError || error.status === 502 || error.status === 504;
}

export class TurnRuns {
  /**
   * @param {object} options
   * @param {ApiClient} options.api
   * @param {ChatStore} options.store
   * @param {(key: string, ok: boolean) => void} options.reachable  "Reconnecting…" while any key is false
   * @param {object} options.on  what the app does next:
   *   changed(turn): a turn changed (save, show);
   *   started(conversation, turn): its session exists (the conversation named, for a draft);
   *   refused(conversation, turn, error): the start was answered with an error;
   *   ended(conversation, turn): its log is complete;
   *   lost(conversation, turn): the server no longer knows its session.
   */
  constructor({ api, store, reachable, on, pollOptions = POLL_DEFAULTS }) {
    this.api = api;
    this.store = store;
    this.reachable = reachable;
    this.on = on;
    this.pollOptions = pollOptions;
    this.pollers = new Map();
  }

  /** Start a turn's session, sending the start again while it gets no answer; then follow it. */
  async start(conversation, turn) {
    // The body must be the same on every attempt (same key + another body is a 422).
    const request = { message: turn.user, conversationId: conversation.draft ? null : conversation.id };
    const key = turn.idempotencyKey;
    let started;
    try {
      started = await untilAnswered(() => this.api.startSession(request, { idempotencyKey: key }), {
        retryable: startMayBeRetried,
        reachable: (ok) => this.reachable(`start:${turn.id}`, ok),
        // A turn deleted meanwhile (or restarted with another key) is not started.
        wanted: () => this.isCurrentAttempt(turn, key),
        pollOptions: this.pollOptions,
      });
    } catch (error) {
      const found = this.isCurrentAttempt(turn, key) && this.store.locate(turn.id);
      if (found) this.on.refused(found.conversation, turn, error);
      return;
    }
    if (!started) return;
    if (!this.isCurrentAttempt(turn, key)) {
      // Its draft was deleted while the start was on its way: delete what it created too.
      if (!request.conversationId) this.api.deleteConversation(started.conversationId).catch(() => {});
      return;
    }
    const found = this.store.locate(turn.id);
    this.on.started(this.store.markStarted(found.conversation, turn, started), turn);
    this.follow(turn);
    if (turn.cancelRequested) this.cancel(turn);
  }

  isCurrentAttempt(turn, key) {
    return this.store.locate(turn.id) !== null && turn.idempotencyKey === key && turn.sessionId === null;
  }

  /** Poll a started turn's events from its last applied seq until its log is complete. */
  follow(turn) {
    if (this.pollers.has(turn.id) || !turn.sessionId || isTerminal(turn.status)) return;
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
        const found = this.store.locate(turn.id);
        if (!found) return;
        if (complete) this.on.ended(found.conversation, turn);
        else if (changed) this.on.changed(turn);
      },
      onFailed: (error) => {
        const found = this.store.locate(turn.id);
        if (!found) return;
        if (error.status === 404) this.on.lost(found.conversation, turn);
        else {
          this.store.fail(turn, error.message);
          this.on.changed(turn);
        }
      },
      onConnection: (ok) => this.reachable(key, ok),
    });
    this.pollers.set(turn.id, poller);
    poller.run().finally(() => {
      if (this.pollers.get(turn.id) === poller) this.pollers.delete(turn.id);
      this.reachable(key, true);
    });
  }

  /** Stop following a turn (its run goes on server-side). */
  unfollow(turn) {
    const poller = this.pollers.get(turn.id);
    if (poller) poller.stop();
    this.pollers.delete(turn.id);
  }

  /** Cut every poll's pause short (the network or the tab came back). */
  wake() {
    this.pollers.forEach((poller) => poller.wake());
  }

  /** Ask a turn's run to stop; if that does not get through, offer Stop again. */
  async cancel(turn) {
    try {
      await untilAnswered(() => this.api.cancelSession(turn.sessionId), {
        attempts: CANCEL_ATTEMPTS,
        reachable: (ok) => this.reachable(`cancel:${turn.id}`, ok),
        pollOptions: this.pollOptions,
      });
    } catch {
      if (!isTerminal(turn.status)) {
        turn.cancelRequested = false;
        this.on.changed(turn);
      }
    }
  }
}
