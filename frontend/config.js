// Where the API lives, and how the page signs in. The local stack and scripts/upload_site.py
// write this file (scripts/page_config.py); this copy is the default for a page served with the API.
//
// API_BASE: empty means the page's own origin; a static host on another origin names the API,
// e.g. `export const API_BASE = "https://api.example.com";`.
//
// COGNITO (optional): sign in through a Cognito user pool's hosted UI instead of with an API key:
// `export const COGNITO = {"domain": "https://<prefix>.auth.<region>.amazoncognito.com",
//   "clientId": "<app client id>", "redirectUri": "https://<the page>/", "scopes": ["openid", "email", "profile"]};`
// Without it the page sends no credentials until the API answers 401, then asks for an API key.
export const API_BASE = "";
