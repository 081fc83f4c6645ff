// The page's state (conversations, their turns, unfinished runs) and its copy in localStorage.
// Pure: no DOM, no network. The storage is passed in, so this module also runs under node.

export const STORAGE_KEYS = Object.freeze({
  conversations: "backchat.v1.conversations",
  pending: "backchat.v1.pending",
  current: "backchat.v1.current",
});

export const TERMINAL_STATUSES = Object.freeze(["done", "error", "cancelled"]);
const TITLE_LENGTH = 60;

export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(status);
}

/** Return a random id (hex); works where crypto.randomUUID does not (plain-http hosts). */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Return a conversation title from its first message: first line, at most 60 characters. */
export function titleFrom(message) {
  const line = message.trim().split("\n")[0].trim();
  const chars = Array.from(line);
  return chars.length > TITLE_LENGTH ? `${chars.slice(0, TITLE_LENGTH - 1).join("")}…` : line;
}

/** Return a fresh turn: the user's message, waiting to be started as a session. */
export function newTurn(message, { id = randomId(), now = new Date().toISOString() } = {}) {
  return {
    id,
    user: message,
    createdAt: now,
    status: "sending",
    sessionId: null,
    // Sent with the start request, so a start retried after a lost answer or a reload
    // returns the same session instead of starting a second run.
    idempotencyKey: randomId(),
    model: null,
    lastSeq: 0,
    answer: "",
    steps: [],
    usage: null,
    error: null,
    cancelRequested: false,
  };
}

/**
 * Apply one event to a turn, in place. Return false, changing nothing, for an event at or below
 * the turn's last applied seq: replays after a reload or a retried poll are harmless.
 */
export function applyEvent(turn, event) {
  if (!(Number.isInteger(event.seq) && event.seq > turn.lastSeq) || isTerminal(turn.status)) {
    return false;
  }
  const content = typeof event.content === "string" ? event.content : "";
  switch (event.eventType) {
    case "thinking": {
      const last = turn.steps[turn.steps.length - 1];
      if (last && last.kind === "thinking") last.text += content;
      else turn.steps.push({ kind: "thinking", text: content });
      break;
    }
    case "tool_call":
      turn.steps.push({
        kind: "tool",
        toolCallId: event.toolCallId || "",
        toolName: event.toolName || "",
        toolInput: event.toolInput ?? null,
        result: null,
      });
      break;
    case "tool_result": {
      const call = turn.steps.find((step) => step.kind === "tool" && step.toolCallId === event.toolCallId);
      if (call) call.result = content;
      else turn.steps.push({ kind: "tool", toolCallId: event.toolCallId || "", toolName: "", toolInput: null, result: content });
      break;
    }
    case "delta":
      turn.answer += content;
      break;
    case "done":
      turn.status = "done";
      turn.usage = event.usage || null;
      break;
    case "error":
      turn.status = "error";
      turn.error = content;
      break;
    case "cancelled":
      turn.status = "cancelled";
      break;
    default:
      // An event type this page does not know yet: skip it, but count it as seen.
      break;
  }
  if (turn.status === "sending") turn.status = "running";
  turn.lastSeq = event.seq;
  return true;
}

/** Apply events in seq order; return true if any of them was new. */
export function applyEvents(turn, events) {
  const ordered = [...events].sort((a, b) => a.seq - b.seq);
  let changed = false;
  for (const event of ordered) changed = applyEvent(turn, event) || changed;
  return changed;
}

/** Return the {role, content} history a turn is sent with: the finished turns before it. */
export function historyBefore(conversation, turn) {
  const history = [];
  for (const earlier of conversation.turns) {
    if (earlier === turn) break;
    // A turn that produced no text (an early error) would leave two user messages in a row,
    // which some providers refuse; the user saw no answer there either.
    if (!isTerminal(earlier.status) || earlier.answer === "") continue;
    history.push({ role: "user", content: earlier.user }, { role: "assistant", content: earlier.answer });
  }
  return history;
}

function normalizeTurn(raw) {
  if (!raw || typeof raw !== "object" || typeof raw.id !== "string" || typeof raw.user !== "string") return null;
  const turn = { ...newTurn(raw.user, { id: raw.id, now: raw.createdAt }), ...raw };
  if (!Array.isArray(turn.steps)) turn.steps = [];
  if (typeof turn.answer !== "string") turn.answer = "";
  if (!Number.isInteger(turn.lastSeq) || turn.lastSeq < 0) turn.lastSeq = 0;
  if (!["sending", "running", ...TERMINAL_STATUSES].includes(turn.status)) turn.status = "running";
  if (turn.status === "running" && !turn.sessionId) turn.status = "sending";
  return turn;
}

function normalizeConversation(raw) {
  if (!raw || typeof raw !== "object" || typeof raw.id !== "string" || !Array.isArray(raw.turns)) return null;
  return {
    id: raw.id,
    title: typeof raw.title === "string" ? raw.title : "",
    createdAt: raw.createdAt || "",
    updatedAt: raw.updatedAt || raw.createdAt || "",
    turns: raw.turns.map(normalizeTurn).filter(Boolean),
  };
}

/** Return a Storage that lives only as long as the page, for browsers that refuse localStorage. */
export function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
  };
}

/** Conversations and unfinished runs, kept in a Storage (localStorage, or any getItem/setItem). */
export class ChatStore {
  constructor(storage, { now = () => new Date().toISOString() } = {}) {
    this.storage = storage;
    this.now = now;
    this.conversations = [];
    this.currentId = null;
  }

  /** Read the stored state; anything unreadable is dropped rather than breaking the page. */
  load() {
    const stored = this.read(STORAGE_KEYS.conversations);
    this.conversations = Array.isArray(stored) ? stored.map(normalizeConversation).filter(Boolean) : [];
    const current = this.read(STORAGE_KEYS.current);
    this.currentId = this.conversation(current) ? current : null;
  }

  /**
   * Write the state. The conversations hold each turn's text together with the seq it is complete
   * up to, in one value, so a reload never sees text without its seq or the other way round.
   * `pending` lists the unfinished turns with that same seq: the runs to resume on the next load.
   */
  save() {
    this.write(STORAGE_KEYS.conversations, this.conversations);
    this.write(STORAGE_KEYS.pending, this.pending());
    this.write(STORAGE_KEYS.current, this.currentId);
  }

  /** Return the unfinished turns as {conversationId, turnId, sessionId, lastSeq}. */
  pending() {
    return this.unfinished().map(({ conversation, turn }) => ({
      conversationId: conversation.id,
      turnId: turn.id,
      sessionId: turn.sessionId,
      lastSeq: turn.lastSeq,
    }));
  }

  /** Return every turn not yet ended, with its conversation, oldest conversation first. */
  unfinished() {
    const found = [];
    for (const conversation of this.conversations) {
      for (const turn of conversation.turns) {
        if (!isTerminal(turn.status)) found.push({ conversation, turn });
      }
    }
    return found;
  }

  /** Return the conversations, most recently active first. */
  sorted() {
    return [...this.conversations].sort((a, b) => (a.updatedAt < b.updatedAt ? 1 : a.updatedAt > b.updatedAt ? -1 : 0));
  }

  conversation(id) {
    return this.conversations.find((conversation) => conversation.id === id) || null;
  }

  current() {
    return this.conversation(this.currentId);
  }

  /** Return {conversation, turn} for a turn id, or null. */
  locate(turnId) {
    for (const conversation of this.conversations) {
      const turn = conversation.turns.find((candidate) => candidate.id === turnId);
      if (turn) return { conversation, turn };
    }
    return null;
  }

  /** Start a conversation with its first message; it becomes the current one. */
  createConversation(firstMessage) {
    const now = this.now();
    const conversation = { id: randomId(), title: titleFrom(firstMessage), createdAt: now, updatedAt: now, turns: [] };
    this.conversations.push(conversation);
    this.currentId = conversation.id;
    return conversation;
  }

  /** Forget a conversation locally; return its unfinished turns (their runs go on server-side). */
  deleteConversation(id) {
    const conversation = this.conversation(id);
    if (!conversation) return [];
    this.conversations = this.conversations.filter((candidate) => candidate !== conversation);
    if (this.currentId === id) this.currentId = null;
    return conversation.turns.filter((turn) => !isTerminal(turn.status));
  }

  addTurn(conversation, message) {
    const turn = newTurn(message, { now: this.now() });
    conversation.turns.push(turn);
    conversation.updatedAt = turn.createdAt;
    return turn;
  }

  /** Make an ended turn ready to be sent again as a new session (Retry). */
  restartTurn(conversation, turn) {
    Object.assign(turn, newTurn(turn.user, { id: turn.id, now: this.now() }));
    conversation.updatedAt = turn.createdAt;
  }

  /** Record the session the start route created for a turn. */
  markStarted(turn, started) {
    turn.sessionId = started.sessionId;
    turn.model = started.model || null;
    if (turn.status === "sending") turn.status = "running";
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

  read(key) {
    try {
      const text = this.storage.getItem(key);
      return text === null ? null : JSON.parse(text);
    } catch {
      return null;
    }
  }

  write(key, value) {
    try {
      this.storage.setItem(key, JSON.stringify(value));
    } catch (error) {
      // Full or disabled storage: the page keeps working, it just cannot resume after a reload.
      console.warn(`backchat: could not save ${key}`, error);
    }
  }
}
