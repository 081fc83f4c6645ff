// Where the API lives. Empty means the page's own origin; a static host on another origin
// replaces this file with, e.g., `export const API_BASE = "https://api.example.com";`.
export const API_BASE = "";
