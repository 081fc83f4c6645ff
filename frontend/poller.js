// Follow one session's event log from a seq until it is complete. No DOM; the network goes
// through the `getEvents` function it is given (ApiClient.getEvents in the page).

import { isTerminal } from "./turn.js";

export const POLL_DEFAULTS = Object.freeze({
  // Pause between polls. Short, because each poll is a long-poll: the server holds it until
  // there is news (an event or a status change) or waitSeconds pass.
  intervalMs: 100,
  // The API's `wait`: below API Gateway's 29 s limit, with room for the network.
  waitSeconds: 15,
  pageSize: 200,
  // Backoff after failed polls: 1 s, 2 s, 4 s ... up to 15 s, each with ±20 % jitter.
  backoffBaseMs: 1000,
  backoffMaxMs: 15_000,
});

/** Return the pause before retry number `attempt` (1, 2, ...) after a failure. */
export function backoffDelay(attempt, { backoffBaseMs, backoffMaxMs } = POLL_DEFAULTS, random = Math.random) {
  const delay = Math.min(backoffMaxMs, backoffBaseMs * 2 ** (attempt - 1));
  return Math.round(delay * (0.8 + 0.4 * random()));
}

/**
 * Poll `getEvents(sessionId, {after, limit, wait})` from seq `after` and hand each page to
 * `onPage(page)`. Stops by itself once a page has a terminal status and hasMore is false (the
 * log is complete), on an answer that will not change by retrying (`onFailed(error)`), or on stop().
 * Failures that may pass (no network, 5xx, 429) are retried with backoff; `onConnection(false)`
 * is called on the first of them and `onConnection(true)` on the next success.
 */
export class SessionPoller {
  constructor({ sessionId, after = 0, getEvents, onPage, onFailed, onConnection = () => {}, options = {} }) {
    this.sessionId = sessionId;
    this.after = after;
    this.getEvents = getEvents;
    this.onPage = onPage;
    this.onFailed = onFailed;
    this.onConnection = onConnection;
    this.options = { ...POLL_DEFAULTS, ...options };
    this.stopped = false;
    this.failures = 0;
    this.wakeUp = null;
  }

  /** Run until the log is complete or stop() is called; resolves then. */
  async run() {
    while (!this.stopped) {
      let page;
      try {
        page = await this.getEvents(this.sessionId, {
          after: this.after,
          limit: this.options.pageSize,
          wait: this.options.waitSeconds,
        });
      } catch (error) {
        if (this.stopped) return;
        if (!error.retryable) {
          this.stopped = true;
          this.onFailed(error);
          return;
        }
        this.failures += 1;
        if (this.failures === 1) this.onConnection(false);
        await this.pause(backoffDelay(this.failures, this.options));
        continue;
      }
      if (this.stopped) return;
      if (this.failures > 0) {
        this.failures = 0;
        this.onConnection(true);
      }
      this.onPage(page);
      // lastSeq is the seq of the last event returned, or `after` again when there were none.
      if (Number.isInteger(page.lastSeq) && page.lastSeq > this.after) this.after = page.lastSeq;
      if (isTerminal(page.status) && !page.hasMore) {
        this.stopped = true;
        return;
      }
      if (!page.hasMore) await this.pause(this.options.intervalMs);
    }
  }

  /** Stop polling; a poll in flight is ignored when it returns. */
  stop() {
    this.stopped = true;
    this.wake();
  }

  /** Cut the current pause short (the network came back, the tab became visible). */
  wake() {
    if (this.wakeUp) this.wakeUp();
  }

  pause(ms) {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    }).finally(() => {
      this.wakeUp = null;
    });
  }
}
