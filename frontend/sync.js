// Reads the server's conversations into the store: the list (its first page again and again, older
// pages on request) and one conversation with all its turns. No DOM; the network goes through
// the ApiClient it is given.

import { POLL_DEFAULTS } from "./poller.js";
import { untilAnswered } from "./retry.js";

export const SYNC_DEFAULTS = Object.freeze({
  // Conversations per list page, and turns per page of a conversation (the API's maximum).
  listPageSize: 50,
  turnPageSize: 100,
  // The list is read again this often while the tab is visible (and when it becomes visible,
  // gets the focus or the network comes back), so other devices' conversations show up…
  refreshMs: 30_000,
  // …and this often while a conversation runs that this page does not follow (started
  // elsewhere), so its running mark goes when it ends.
  busyRefreshMs: 5_000,
});

export class ServerSync {
  /**
   * @param {object} options
   * @param {ApiClient} options.api
   * @param {ChatStore} options.store
   * @param {(key: string, ok: boolean) => void} options.reachable
   * @param {object} options.on  listed(dropped): the list changed (conversations dropped from it);
   *   read(conversation, droppedTurns): a conversation was read; gone(id): it is not on the server;
   *   failed(error): a read was refused for another reason.
   * @param {() => boolean} options.busy  true while a conversation runs that the page does not follow
   * @param {() => boolean} options.visible  true while the page can be seen
   */
  constructor({ api, store, reachable, on, busy, visible, options = {}, pollOptions = POLL_DEFAULTS }) {
    this.api = api;
    this.store = store;
    this.reachable = reachable;
    this.on = on;
    this.busy = busy;
    this.visible = visible;
    this.options = { ...SYNC_DEFAULTS, ...options };
    this.pollOptions = pollOptions;
    // Where "Load more" goes on from; null when the list is complete.
    this.cursor = null;
    this.loadedMore = false;
    this.listing = null;
    this.listAgain = false;
    this.reading = new Map();
    this.timer = null;
  }

  /** Read the list's first page now (once more after a read in flight, if one is). */
  refreshList() {
    if (this.listing) {
      this.listAgain = true;
      return this.listing;
    }
    this.listing = this.readFirstPage().finally(() => {
      this.listing = null;
      if (this.listAgain) {
        this.listAgain = false;
        this.refreshList();
      } else {
        this.schedule();
      }
    });
    return this.listing;
  }

  async readFirstPage() {
    const mark = this.store.mark();
    let page;
    try {
      page = await this.retrying("list", () => this.api.listConversations({ limit: this.options.listPageSize }));
    } catch (error) {
      this.on.failed(error);
      return;
    }
    const dropped = this.store.mergeList(page, { first: true, mark });
    if (!this.loadedMore) this.cursor = page.nextCursor || null;
    this.on.listed(dropped);
  }

  /** Add the next page of older conversations to the list. */
  async loadMore() {
    if (!this.cursor) return;
    let page;
    try {
      page = await this.retrying("list", () => this.api.listConversations({ limit: this.options.listPageSize, cursor: this.cursor }));
    } catch (error) {
      this.on.failed(error);
      return;
    }
    this.store.mergeList(page, { first: false });
    this.cursor = page.nextCursor || null;
    this.loadedMore = true;
    this.on.listed([]);
  }

  get hasMore() {
    return this.cursor !== null;
  }

  /** Read a conversation and all its turns, page by page; once more after a read in flight. */
  readConversation(id) {
    const inFlight = this.reading.get(id);
    if (inFlight) {
      inFlight.again = true;
      return inFlight.done;
    }
    const entry = { again: false, done: null };
    entry.done = (async () => {
      do {
        entry.again = false;
        await this.readAllTurns(id);
      } while (entry.again);
      this.reading.delete(id);
    })();
    this.reading.set(id, entry);
    return entry.done;
  }

  async readAllTurns(id) {
    const mark = this.store.mark();
    const turns = [];
    let read = null;
    let cursor = null;
    try {
      do {
        const page = await this.retrying(`read:${id}`, () => this.api.getConversation(id, { limit: this.options.turnPageSize, cursor }));
        read = read || page;
        turns.push(...page.turns);
        cursor = page.nextCursor || null;
      } while (cursor);
    } catch (error) {
      if (error.status === 404) this.on.gone(id);
      else this.on.failed(error);
      return;
    }
    const dropped = this.store.mergeConversation(read, turns, { mark });
    this.on.read(this.store.conversation(id), dropped);
  }

  retrying(key, request) {
    return untilAnswered(request, { reachable: (ok) => this.reachable(key, ok), pollOptions: this.pollOptions });
  }

  /** Read the list again after a pause (shorter while others' runs are going). */
  schedule() {
    clearTimeout(this.timer);
    const delay = this.busy() ? this.options.busyRefreshMs : this.options.refreshMs;
    this.timer = setTimeout(() => {
      if (this.visible()) this.refreshList();
      else this.schedule();
    }, delay);
  }
}
