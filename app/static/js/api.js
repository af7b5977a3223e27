// Calls to the JSON API: the stored API key on every call, one key prompt on 401, Retry-After on 429/503.
import { h } from "./dom.js";

const KEY_STORAGE = "retnet.apiKey";
const MAX_RETRIES = 3;

/** An API answer that is not a success: ``status`` and the server's ``detail`` sentence. */
export class ApiError extends Error {
  constructor(status, detail, body = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.body = body;
  }
}

export function storedKey() {
  try { return localStorage.getItem(KEY_STORAGE) || null; } catch { return null; }
}

export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  } catch { /* private mode: the key lives for this page only */ }
  memoryKey = key || null;
}

let memoryKey = null;
function currentKey() { return storedKey() || memoryKey; }

/** Headers with the key, when one is stored. */
export function authHeaders(extra = {}) {
  const headers = new Headers(extra);
  const key = currentKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

/**
 * fetch() an API path. Returns parsed JSON (``as: "json"``), a Blob (``"blob"``) or the Response (``"response"``).
 * A 401 asks for the key once (every waiting call shares the prompt) and retries; 429 and 503 wait for
 * Retry-After (at most 30 s) and retry; anything else that is not 2xx throws an ApiError with the detail.
 */
export async function api(path, { method = "GET", body = undefined, headers = {}, as = "json" } = {}) {
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch(path, { method, body, headers: authHeaders(headers) });
    } catch (err) {
      throw new ApiError(0, `the service cannot be reached (${err.message}); is it running?`);
    }
    if (response.status === 401 && attempt < MAX_RETRIES && !declined) {
      const detail = await errorDetail(response);
      const hadKey = Boolean(currentKey());
      await askForKey(hadKey ? `The stored key was refused: ${detail}` : detail);
      continue;
    }
    if ((response.status === 429 || response.status === 503) && attempt < MAX_RETRIES
        && response.headers.has("Retry-After")) {
      const wait = Math.min(30, Number(response.headers.get("Retry-After")) || 1);
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      continue;
    }
    if (!response.ok) {
      const text = await response.text();
      let parsed = null;
      try { parsed = JSON.parse(text); } catch { /* not JSON */ }
      throw new ApiError(response.status, detailOf(parsed, text, response), parsed);
    }
    if (as === "response") return response;
    if (as === "blob") return response.blob();
    return response.status === 204 ? null : response.json();
  }
}

async function errorDetail(response) {
  const text = await response.text();
  let parsed = null;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return detailOf(parsed, text, response);
}

function detailOf(parsed, text, response) {
  if (parsed && typeof parsed.detail === "string") return parsed.detail;
  if (parsed && parsed.detail) return JSON.stringify(parsed.detail);
  return text.trim().slice(0, 300) || `${response.status} ${response.statusText}`;
}

// --- the key prompt ----------------------------------------------------------------------------------------------

let pending = null;
// Cancelled once: later 401s fail quietly (no dialog at every poll) until the key button is used.
let declined = false;

/** Ask for the API key (one dialog for all callers); resolves when a key is stored, rejects on cancel. */
export function askForKey(reason = "") {
  if (pending) return pending;
  pending = new Promise((resolve, reject) => {
    const input = h("input", { type: "password", id: "api-key-input", name: "key", required: true,
                               autocomplete: "off", spellcheck: "false", size: 40 });
    const dialog = h("dialog", { id: "key-dialog", "aria-labelledby": "key-dialog-title" },
      h("form", { method: "dialog" },
        h("h2", { id: "key-dialog-title" }, "API key required"),
        reason ? h("p", { class: "error" }, reason) : null,
        h("p", {}, "This service requires an API key. It is kept in this browser (local storage) and sent as ",
          h("code", {}, "Authorization: Bearer …"), " with every request. An administrator creates keys with ",
          h("code", {}, "retnet keys create NAME"), "."),
        h("label", { for: "api-key-input" }, "API key", input),
        h("menu", {},
          h("button", { type: "submit", value: "cancel", class: "secondary", formnovalidate: true }, "Cancel"),
          h("button", { type: "submit", value: "save", id: "api-key-save" }, "Use this key"))));
    document.body.append(dialog);
    dialog.addEventListener("close", () => {
      const key = input.value.trim();
      dialog.remove();
      pending = null;
      if (dialog.returnValue === "save" && key) {
        declined = false;
        storeKey(key);
        document.dispatchEvent(new CustomEvent("retnet:key-changed"));
        resolve(key);
      } else {
        declined = true;
        reject(new ApiError(401, reason || "an API key is required"));
      }
    });
    dialog.showModal();
    input.focus();
  });
  return pending;
}

/** The header's key button: set, change or forget the stored key. */
export function installKeyButton(button) {
  if (!button) return;
  const label = () => { button.textContent = currentKey() ? "API key ✓" : "API key"; };
  label();
  button.addEventListener("click", async () => {
    if (currentKey() && confirm("Forget the API key stored in this browser?")) {
      storeKey(null);
      label();
      return;
    }
    declined = false;
    try { await askForKey(); } catch { /* cancelled */ }
    label();
  });
  document.addEventListener("retnet:key-changed", label);
}

/** Save a Blob under a file name (the CSV download when a key has to go with the request). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * A link to an API file (CSV) that also works when a key is required: without a stored key the browser follows
 * the href; with one, the click fetches the file with the key and saves it.
 */
export function downloadLink(href, filename, ...children) {
  return h("a", { href, download: filename, onclick: async (event) => {
    if (!currentKey()) return;
    event.preventDefault();
    try { saveBlob(await api(href, { as: "blob" }), filename); } catch (err) { alert(err.message); }
  } }, ...children);
}

/** Load an API image (sent with the key) into an <img>; resolves to false (and hides the figure) on 404. */
export async function loadImage(img, path) {
  try {
    const blob = await api(path, { as: "blob" });
    const url = URL.createObjectURL(blob);
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });  // decoded: the blob can go
    img.src = url;
    return true;
  } catch (err) {
    const text = err.status === 404 ? err.detail : `picture unavailable: ${err.message}`;
    img.replaceWith(h("p", { class: "muted" }, text));
    return false;
  }
}
