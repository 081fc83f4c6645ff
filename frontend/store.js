// The page's conversations and their turns, and their cache in localStorage. The server is the
// truth (reconcile.js merges what it says in); the cache lets the page show a conversation at
// once and resume the runs it follows from the seq it had. Pure: no DOM, no network; the
// Storage is passed in, so this module also runs under node.

import { takeLegacyCache } from "./legacy-cache.js";
import { readJson, writeJson } from "./storage.js";
import { applySummary, conversationFromServer, mergeListPage, mergeTurns } from "./reconcile.js";
import { isTerminal, newTurn, normalizeTurn, randomId } from "./turn.js";

export const STORAGE_KEYS = Object.freeze({
  conversations: "backchat.v2.conversations",
  current: "backchat.v2.current",
});

// Turns are cached for this many of the most recently active conversations (and for the one on
// screen, and any with a turn going); the others keep only their list entry and are read again.
export const CACHED_CONVERSATIONS = 20;
const TITLE_LENGTH = 60;
// A conversation the server has not named yet: the first turn's start is not answered.
const DRAFT_PREFIX = "draft:";

/** Return a conversation title from its first message: first line, at most 60 characters. */
export function titleFrom(message) {
  const line = message.trim().split("\n")[0].trim();
  const chars = Array.from(line);
  return chars.length > TITLE_LENGTH ? `${chars.slice(0, TITLE_LENGTH - 1).join("")}…` : line;
}

function newestFirst(a, b) {
  if (a.draft !== b.draft) return a.draft ? -1 : 1;
  return a.updatedAt < b.updatedAt ? 1 : a.updatedAt > b.updatedAt ? -1 : 0;
}

function normalizeConversation(raw) {
  if (!raw || typeof raw !== "object" || typeof raw.id !== "string") return null;
  const draft = raw.id.startsWith(DRAFT_PREFIX);
  // Turns that ended here without reaching the server (a refused start) were only a message.
  const turns = Array.isArray(raw.turns)
    ? raw.turns.map(normalizeTurn).filter((turn) => turn && (turn.sessionId || turn.status === "sending"))
    : null;
  if (draft && !(turns && turns.length)) return null;
  const text = (value) => (typeof value === "string" ? value : "");
  return {
    id: raw.id,
    draft,
    title: text(raw.title),
    createdAt: text(raw.createdAt),
    updatedAt: text(raw.updatedAt || raw.createdAt),
    turnCount: Number.isInteger(raw.turnCount) ? raw.turnCount : 0,
    lastSessionId: typeof raw.lastSessionId === "string" ? raw.lastSessionId : null,
    lastStatus: typeof raw.lastStatus === "string" ? raw.lastStatus : null,
    turns,
  };
}

/** Conversations and their turns, cached in a Storage (localStorage, or any getItem/setItem). */
export class ChatStore {
  constructor(storage, { now = () => new Date().toISOString() } = {}) {
    this.storage = storage;
    this.now = now;
    this.conversations = [];
    this.currentId = null;
    // When each conversation or turn last changed here (not stored): a server answer asked
    // for before that change must not undo it.
    this.clock = 0;
    this.touched = new WeakMap();
  }

  /** Read the cache (or the old page's data, once); anything unreadable is dropped. */
  load() {
    const stored = readJson(this.storage, STORAGE_KEYS.conversations);
    if (Array.isArray(stored)) {
      this.conversations = stored.map(normalizeConversation).filter(Boolean);
      this.currentId = readJson(this.storage, STORAGE_KEYS.current);
    } else {
      const legacy = takeLegacyCache(this.storage);
      this.conversations = legacy ? legacy.conversations : [];
      this.currentId = legacy ? legacy.currentId : null;
    }
    if (typeof this.currentId !== "string" || (this.currentId.startsWith(DRAFT_PREFIX) && !this.current())) {
      this.currentId = null;
    }
  }

  /**
   * Write the cache: the conversation list, each cached conversation's turns (every turn's text
   * together with the seq it is complete up to, in one value), and the one on screen.
   */
  save() {
    const cached = new Set(this.sorted().slice(0, CACHED_CONVERSATIONS));
    const kept = this.conversations.map((conversation) => (
      cached.has(conversation) || conversation.id === this.currentId || this.hasUnfinished(conversation)
        ? conversation
        : { ...conversation, turns: null }
    ));
    writeJson(this.storage, STORAGE_KEYS.conversations, kept);
    writeJson(this.storage, STORAGE_KEYS.current, this.currentId);
  }

  /** Return a mark to compare changes against (see touchedSince). */
  mark() {
    return this.clock;
  }

  /** Note that a conversation or a turn changed here now. */
  touch(item) {
    this.clock += 1;
    this.touched.set(item, this.clock);
  }

  /** True if the item changed here after `mark` was taken. */
  touchedSince(item, mark) {
    return (this.touched.get(item) || 0) > mark;
  }

  hasUnfinished(conversation) {
    return (conversation.turns || []).some((turn) => !isTerminal(turn.status));
  }

  /** Return every turn not yet ended, with its conversation. */
  unfinished() {
    const found = [];
    for (const conversation of this.conversations) {
      for (const turn of conversation.turns || []) {
        if (!isTerminal(turn.status)) found.push({ conversation, turn });
      }
    }
    return found;
  }

  /** Return the conversations as the list shows them: drafts, then most recently active first. */
  sorted() {
    return [...this.conversations].sort(newestFirst);
  }

  conversation(id) {
    return this.conversations.find((conversation) => conversation.id === id) || null;
  }

  current() {
    return this.conversation(this.currentId);
  }

  /**
   * Make a conversation the one on screen (null: a new chat) and return it. One the page does
   * not have yet (named by the address) is added with its turns unknown, to be read.
   */
  open(id) {
    if (id && !this.conversation(id)) {
      if (id.startsWith(DRAFT_PREFIX)) id = null;
      else this.conversations.push(conversationFromServer({ id }));
    }
    this.currentId = id || null;
    return this.current();
  }

  /** Return {conversation, turn} for a turn id, or null. */
  locate(turnId) {
    for (const conversation of this.conversations) {
      const turn = (conversation.turns || []).find((candidate) => candidate.id === turnId);
      if (turn) return { conversation, turn };
    }
    return null;
  }

  /** Start a draft conversation with its first message; it becomes the current one. */
  createDraft(firstMessage) {
    const now = this.now();
    const conversation = {
      id: `${DRAFT_PREFIX}${randomId()}`, draft: true, title: titleFrom(firstMessage), createdAt: now,
      updatedAt: now, turnCount: 0, lastSessionId: null, lastStatus: null, turns: [],
    };
    this.conversations.push(conversation);
    this.currentId = conversation.id;
    this.touch(conversation);
    return conversation;
  }

  /**
   * Add a turn with the user's message. Turns that ended here without reaching the server
   * (a refused start) are dropped first: the user has moved on, and the server never had them.
   */
  addTurn(conversation, message) {
    const turn = newTurn(message, { now: this.now() });
    conversation.turns = (conversation.turns || []).filter((other) => other.sessionId || !isTerminal(other.status));
    if (conversation.draft && conversation.turns.length === 0) conversation.title = titleFrom(message);
    conversation.turns.push(turn);
    this.touch(turn);
    return turn;
  }

  /** Make a turn that never reached the server ready to be sent again (a new Idempotency-Key). */
  restartTurn(turn) {
    Object.assign(turn, newTurn(turn.user, { id: turn.id, now: this.now() }));
    this.touch(turn);
  }

  /**
   * Record the session (and, for a draft, the conversation) the start route created for a turn.
   * A draft takes the server's conversation id; if the list already has that conversation (the
   * first answer was lost, the list was read meanwhile), the two become one.
   */
  markStarted(conversation, turn, started) {
    turn.sessionId = started.sessionId;
    turn.model = started.model || null;
    if (started.createdAt) turn.createdAt = started.createdAt;
    if (turn.status === "sending") turn.status = "running";
    this.touch(turn);
    let target = conversation;
    if (conversation.draft) {
      const draftId = conversation.id;
      const listed = this.conversation(started.conversationId);
      if (listed) {
        // The read that follows puts the turn in its place among the listed conversation's.
        this.conversations = this.conversations.filter((candidate) => candidate !== conversation);
        listed.turns = [...(listed.turns || []), turn];
        target = listed;
      } else {
        conversation.id = started.conversationId;
        conversation.draft = false;
      }
      if (this.currentId === draftId) this.currentId = target.id;
    }
    target.turnCount = Math.max(target.turnCount, target.turns.length);
    target.lastSessionId = turn.sessionId;
    target.lastStatus = "running";
    if (started.createdAt && started.createdAt > target.updatedAt) target.updatedAt = started.createdAt;
    this.touch(target);
    return target;
  }

  /** Note how a turn ended in its conversation's list entry (the list is read again later). */
  noteEnded(conversation, turn) {
    if (conversation.lastSessionId === turn.sessionId) conversation.lastStatus = turn.status;
  }

  /** End a turn without a terminal event from the server (start refused, session gone). */
  fail(turn, message) {
    turn.status = "error";
    turn.error = message;
  }

  /** End a turn with the status the server reported, if no terminal event did it already. */
  settle(turn, status) {
    if (isTerminal(status) && !isTerminal(turn.status)) turn.status = status;
  }

  /** Merge a page of the server's list (see mergeListPage); return the conversations dropped. */
  mergeList(page, { first, mark }) {
    const { conversations, dropped } = mergeListPage(this.conversations, page, {
      first, keep: (conversation) => this.touchedSince(conversation, mark),
    });
    this.conversations = conversations;
    if (dropped.some((conversation) => conversation.id === this.currentId)) this.currentId = null;
    return dropped;
  }

  /**
   * Merge the server's read of a conversation (its fields and all its turns); add it if the
   * page did not have it. Return the turns dropped.
   */
  mergeConversation(read, turns, { mark }) {
    let conversation = this.conversation(read.id);
    if (conversation) applySummary(conversation, read);
    else {
      conversation = conversationFromServer(read);
      this.conversations.push(conversation);
    }
    return mergeTurns(conversation, turns, { keep: (turn) => this.touchedSince(turn, mark) });
  }

  /** Forget a conversation (deleted, or gone from the server); return its unfinished turns. */
  removeConversation(id) {
    const conversation = this.conversation(id);
    if (!conversation) return [];
    this.conversations = this.conversations.filter((candidate) => candidate !== conversation);
    if (this.currentId === id) this.currentId = null;
    return (conversation.turns || []).filter((turn) => !isTerminal(turn.status));
  }
}
