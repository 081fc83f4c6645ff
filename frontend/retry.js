// Sends a request again, with backoff, for as long as it gets no usable answer. No DOM; the
// request is a function it is given.

import { backoffDelay, POLL_DEFAULTS } from "./poller.js";

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Return `request()`'s answer, sending it again after 1 s, 2 s, 4 s … (poll options' backoff)
 * while `retryable(error)` says the error may pass, at most `attempts` times; any other error
 * (or the last one) is thrown. `reachable(false)` is called while it is failing and
 * `reachable(true)` once it is not. `wanted()` returning false gives up before the next try
 * (resolves to undefined).
 */
export async function untilAnswered(request, {
  retryable = (error) => error.retryable,
  attempts = Infinity,
  reachable = () => {},
  wanted = () => true,
  pollOptions = POLL_DEFAULTS,
} = {}) {
  try {
    for (let attempt = 1; wanted(); attempt += 1) {
      try {
        return await request();
      } catch (error) {
        if (!retryable(error) || attempt >= attempts) throw error;
        reachable(false);
        await sleep(backoffDelay(attempt, pollOptions));
      }
    }
    return undefined;
  } finally {
    reachable(true);
  }
}
