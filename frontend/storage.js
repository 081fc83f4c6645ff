// JSON values in a Storage (localStorage, sessionStorage, or the in-memory stand-in below) that
// never throw: a disabled or full storage makes the page forget, never break. No DOM, no network.

/** Return the JSON value stored under key, or null when there is none or it is unreadable. */
export function readJson(storage, key) {
  try {
    const text = storage.getItem(key);
    return text === null ? null : JSON.parse(text);
  } catch {
    return null;
  }
}

/** Store a value as JSON; a full or disabled storage only costs what it would have kept. */
export function writeJson(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch (error) {
    console.warn(`backchat: could not save ${key}`, error);
  }
}

export function removeKey(storage, key) {
  try {
    storage.removeItem(key);
  } catch {
    // Disabled storage holds nothing to remove.
  }
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
