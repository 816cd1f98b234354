// The server's write key (LOOKALIKE_API_KEY), entered once on the page and kept for this tab only:
// sessionStorage (gone when the tab closes), never localStorage, a cookie or the URL. Writes send it as
// `Authorization: Bearer <key>`.

const NAME = "lookalike-api-key";
let held = "";     // where the key lives when the browser refuses sessionStorage: this page's life only

export function writeKey() {
  try {
    return sessionStorage.getItem(NAME) || "";
  } catch {
    return held;
  }
}

export function keepWriteKey(key) {
  held = key;
  try {
    sessionStorage.setItem(NAME, key);
  } catch { /* held above */ }
}

export function forgetWriteKey() {
  held = "";
  try {
    sessionStorage.removeItem(NAME);
  } catch { /* nothing was kept there */ }
}

// Headers of a write made with the key.
export const withKey = (key) => ({Accept: "application/json", Authorization: `Bearer ${key}`});
