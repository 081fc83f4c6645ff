// Reads what the page kept before the server kept conversations (localStorage `backchat.v1.*`,
// where the page was the only copy) into the current cache's shape, once, and removes it.
// Pure: no DOM, no network; the Storage is passed in.

import { readJson, removeKey } from "./storage.js";
import { normalizeTurn } from "./turn.js";

/** The old keys. `backchat.v1.auth` (the sign-in's) is not one of them: it is still in use. */
export const LEGACY_KEYS = Object.freeze({
  conversations: "backchat.v1.conversations",
  pending: "backchat.v1.pending",
  current: "backchat.v1.current",
});

// The server took the old page's conversation ids over only where they fit its own id syntax.
const SERVER_ID = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Return the old page's data as {conversations, currentId}, or null if there is none; remove it.
 *
 * Kept: conversations with an id the server can have (its migration moved the sessions the old
 * page started into conversations under the same ids) and their turns that reached the server
 * (with a session id), with their text, steps and seq, so a run still going resumes from there.
 * Dropped: turns never started (their start was for the old protocol, with the history in it)
 * and anything unreadable. The server's list then decides which conversations stay.
 */
export function takeLegacyCache(storage) {
  const stored = readJson(storage, LEGACY_KEYS.conversations);
  const current = readJson(storage, LEGACY_KEYS.current);
  const present = Object.values(LEGACY_KEYS).some((key) => storage.getItem(key) !== null);
  if (!present) return null;
  for (const key of Object.values(LEGACY_KEYS)) removeKey(storage, key);
  const conversations = (Array.isArray(stored) ? stored : []).map(fromLegacy).filter(Boolean);
  const currentId = conversations.some((conversation) => conversation.id === current) ? current : null;
  return { conversations, currentId };
}

function fromLegacy(raw) {
  if (!raw || typeof raw !== "object" || typeof raw.id !== "string" || !SERVER_ID.test(raw.id)) return null;
  const turns = (Array.isArray(raw.turns) ? raw.turns : []).map(normalizeTurn).filter((turn) => turn && turn.sessionId);
  if (turns.length === 0) return null;
  const last = turns[turns.length - 1];
  return {
    id: raw.id,
    draft: false,
    title: typeof raw.title === "string" ? raw.title : "",
    createdAt: typeof raw.createdAt === "string" ? raw.createdAt : "",
    updatedAt: typeof raw.updatedAt === "string" ? raw.updatedAt : "",
    turnCount: turns.length,
    lastSessionId: last.sessionId,
    lastStatus: last.status,
    turns,
  };
}
