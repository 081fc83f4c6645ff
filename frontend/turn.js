// One turn of a conversation as the page keeps it, and the one place events change it (applyEvent).
// Pure: no DOM, no network, no storage.

export const TERMINAL_STATUSES = Object.freeze(["done", "error", "cancelled"]);
export const TURN_STATUSES = Object.freeze(["sending", "running", ...TERMINAL_STATUSES]);

export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(status);
}

/** Return a random id (hex); works where crypto.randomUUID does not (plain-http hosts). */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
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

/** Return a turn read back from storage in the current shape, or null if it is not one. */
export function normalizeTurn(raw) {
  if (!raw || typeof raw !== "object" || typeof raw.id !== "string" || typeof raw.user !== "string") return null;
  const turn = { ...newTurn(raw.user, { id: raw.id, now: raw.createdAt }), ...raw };
  if (!Array.isArray(turn.steps)) turn.steps = [];
  if (typeof turn.answer !== "string") turn.answer = "";
  if (!Number.isInteger(turn.lastSeq) || turn.lastSeq < 0) turn.lastSeq = 0;
  if (typeof turn.sessionId !== "string" || turn.sessionId === "") turn.sessionId = null;
  if (!TURN_STATUSES.includes(turn.status)) turn.status = "running";
  if (turn.status === "running" && !turn.sessionId) turn.status = "sending";
  return turn;
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
