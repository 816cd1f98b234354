// The JSON API client (/api/..., described by /api/openapi.json): every answer is JSON, an error's body is
// {error: {code, message}}, and an error becomes an ApiError whose message is a sentence for the person.

import {UNREACHABLE, explain} from "./messages.js";
import {FILTER_LISTS, PAGE, addFilters, cropText, noFilters} from "./state.js";
import {base64Of, blobOf} from "./uploads.js";

export class ApiError extends Error {
  constructor(message, code = "") {
    super(message);
    this.code = code;   // the API's error code; "" when the API did not answer
  }
}

export const thumbUrl = (id) => `/api/images/${encodeURIComponent(id)}/thumbnail`;
export const fileUrl = (id) => `/api/images/${encodeURIComponent(id)}/file`;

export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {headers: {Accept: "application/json"}, ...options});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(UNREACHABLE);
  }
  // Not JSON: not the API's answer but that of something in front of it (a proxy whose upstream is down).
  const body = await response.json().catch(() => null);
  if (body === null) throw new ApiError(UNREACHABLE);
  if (!response.ok) throw new ApiError(explain(body, response.status), body.error.code);
  return body;
}

// One page of results of `query` (a SearchResponse), from `offset`. Near copies of a result are folded into it
// (collapse=near: its `copies`), so a page is never several copies of one picture; offset counts folded results.
export async function searchPage(query, offset, signal) {
  if (query.kind === "refine") {
    const f = query.filters || noFilters();
    const body = {positive: query.pos, negative: query.neg, tags: query.tags, limit: PAGE, offset,
                  collapse: "near"};
    for (const name of ["taken_from", "taken_to"]) if (f[name]) body[name] = f[name];
    for (const name of FILTER_LISTS) if ((f[name] || []).length) body[name] = f[name];
    if (query.key) {
      body.image_base64 = await base64Of(query.key);
      if (query.crop) body.crop = query.crop;
    }
    return api("/api/search/refine", {method: "POST", body: JSON.stringify(body), signal,
                                      headers: {Accept: "application/json", "Content-Type": "application/json"}});
  }
  const params = new URLSearchParams({limit: PAGE, offset, collapse: "near"});
  if (query.tags.length) params.set("tags", query.tags.join(","));
  addFilters(params, query);
  if (query.crop) params.set("crop", cropText(query.crop));
  if (query.kind === "none") {   // the collection lists every picture, copies too
    params.delete("collapse");
    return api(`/api/images?${params}`, {signal});
  }
  if (query.kind === "text") {
    params.set("q", query.q);
    return api(`/api/search?${params}`, {signal});
  }
  if (query.kind === "similar") return api(`/api/images/${encodeURIComponent(query.id)}/similar?${params}`, {signal});
  const form = new FormData();
  form.append("image", blobOf(query.key), query.name || "picture");
  return api(`/api/search/image?${params}`, {method: "POST", body: form, signal});
}

// Counts per camera, folder and year among the pictures `query`'s tags and filters leave (GET /api/facets).
export function facetsOf(query, signal) {
  const params = addFilters(new URLSearchParams({limit: 30}), query);
  if (query.tags.length) params.set("tags", query.tags.join(","));
  return api(`/api/facets?${params}`, {signal});
}

// One search at a time: `begin()` aborts the one in flight and returns the new one's signal and a test of
// whether it is still the latest (a late answer to an older search is dropped).
export function oneAtATime() {
  let latest = null;
  return function begin() {
    if (latest) latest.abort();
    const mine = new AbortController();
    latest = mine;
    return {signal: mine.signal, current: () => latest === mine};
  };
}
