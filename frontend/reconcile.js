// Merges what the server says into the page's conversations: the server's list and a
// conversation's turns are the truth; the page keeps only what the server does not send
// (thinking and tool steps, the seq a running turn's text is complete up to) and what it
// does not know yet (a turn or a conversation being started). Pure: no DOM, no network.

import { isTerminal, newTurn } from "./turn.js";

/** The fields of a conversation as the server lists it. */
const SUMMARY_FIELDS = Object.freeze(["title", "createdAt", "updatedAt", "turnCount", "lastSessionId", "lastStatus"]);

/** Copy the server's view of a conversation (a list entry or a read) onto the page's one. */
export function applySummary(conversation, summary) {
  for (const field of SUMMARY_FIELDS) {
    if (Object.hasOwn(summary, field)) conversation[field] = summary[field];
  }
}

/** Return a conversation the page has not read yet (its turns unknown: null). */
export function conversationFromServer(summary) {
  const conversation = { id: summary.id, draft: false, title: "", createdAt: "", updatedAt: "",
    turnCount: 0, lastSessionId: null, lastStatus: null, turns: null };
  applySummary(conversation, summary);
  return conversation;
}

/**
 * Merge one page of the server's conversation list into `conversations`; return
 * {conversations, dropped}. On the first (most recent) page, a conversation the page has that
 * the server does not list is gone (deleted elsewhere, or never there), unless it is a draft,
 * `keep(conversation)` says it changed after the list was asked for, or it is older than the
 * page's last entry while more pages follow. Later pages only add and update.
 */
export function mergeListPage(conversations, page, { first, keep = () => false }) {
  const listed = new Map(page.conversations.map((summary) => [summary.id, summary]));
  const oldest = page.conversations[page.conversations.length - 1];
  const merged = [];
  const dropped = [];
  for (const conversation of conversations) {
    const summary = listed.get(conversation.id);
    if (summary) {
      applySummary(conversation, summary);
      listed.delete(conversation.id);
      merged.push(conversation);
    } else if (!first || conversation.draft || keep(conversation)
               || (page.nextCursor && oldest && conversation.updatedAt < oldest.updatedAt)) {
      merged.push(conversation);
    } else {
      dropped.push(conversation);
    }
  }
  for (const summary of listed.values()) merged.push(conversationFromServer(summary));
  return { conversations: merged, dropped };
}

/**
 * Make a conversation's turns the server's (oldest first), each merged with the page's copy of
 * it (matched by session id); keep after them the turns the server cannot know yet: those
 * without a session, and those `keep(turn)` says were started after the read was asked for.
 * Return the turns left out (the server no longer has them).
 */
export function mergeTurns(conversation, serverTurns, { keep = () => false } = {}) {
  const cached = conversation.turns || [];
  const bySession = new Map(cached.filter((turn) => turn.sessionId).map((turn) => [turn.sessionId, turn]));
  const turns = serverTurns.map((served) => {
    const turn = bySession.get(served.sessionId) || turnFromServer(served);
    bySession.delete(served.sessionId);
    applyServerTurn(turn, served);
    return turn;
  });
  const merged = new Set(turns);
  const dropped = [];
  for (const turn of cached) {
    if (merged.has(turn)) continue;
    if (!turn.sessionId || keep(turn)) turns.push(turn);
    else dropped.push(turn);
  }
  conversation.turns = turns;
  return dropped;
}

/** Return a turn this page has no copy of, from the server's view of it. */
export function turnFromServer(served) {
  const turn = newTurn(served.message, { id: served.sessionId, now: served.createdAt });
  turn.sessionId = served.sessionId;
  turn.idempotencyKey = null;
  turn.status = "running";
  return turn;
}

/**
 * Update a turn from the server's view of it. An ended turn takes the server's status, answer,
 * error and usage (the answer replaces the page's text, so nothing shows twice); a running one
 * keeps the page's text and the seq it is complete up to, which its events continue.
 */
export function applyServerTurn(turn, served) {
  turn.user = served.message;
  turn.createdAt = served.createdAt;
  turn.model = served.model ?? turn.model;
  if (isTerminal(served.status)) {
    turn.status = served.status;
    if (typeof served.answer === "string") turn.answer = served.answer;
    turn.error = served.status === "error" ? served.error || turn.error : null;
    if (served.status === "done") {
      turn.usage = {
        inputTokens: served.inputTokens ?? 0,
        outputTokens: served.outputTokens ?? 0,
        totalTokens: served.totalTokens ?? 0,
      };
    }
    turn.cancelRequested = false;
  } else if (!isTerminal(turn.status)) {
    // Never back from an end the page saw itself (statuses only move forward).
    turn.status = "running";
  }
}

/**
 * True while a conversation has a turn going: one of the page's turns, or the server's last
 * turn when the page has not seen that turn end.
 */
export function isRunning(conversation) {
  const turns = conversation.turns || [];
  if (turns.some((turn) => !isTerminal(turn.status))) return true;
  if (conversation.lastStatus !== "running") return false;
  return !turns.some((turn) => turn.sessionId === conversation.lastSessionId);
}
