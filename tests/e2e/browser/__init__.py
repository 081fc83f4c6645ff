"""The chat page in the system's Chromium (Playwright) against the real local stack."""
