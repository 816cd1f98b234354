// lookalike web page: talks only to the JSON API (/api/...). No framework, no build step.
//
// A query is one of
//   {kind: "none"}                               nothing asked yet
//   {kind: "text", q, tags}                      words (q may be "" when only tags are chosen)
//   {kind: "similar", id, name, thumb, tags}     "more like this" indexed picture
//   {kind: "image", key, name, thumb, tags}      an uploaded picture (its bytes stay in `uploads`)
//   {kind: "refine", pos, neg, key?, crop?, name, tags}  more like the `pos` ids (and the uploaded picture
//                                                 `key`, if any), less like the `neg` ids
// similar and image queries may have a `crop` [x, y, w, h] (fractions): search by that region alone.
// The page state {query, trail, marks, snapshot?} lives in history.state and the URL (?q=, ?similar=,
// ?image=, ?pos=&neg=, &crop=, &tags=; marks not yet refined in &more= and &less=), so back/forward,
// reload and bookmarks work. An uploaded picture cannot go in a URL: its Blob is kept in memory, and the
// results it gave are kept in history.state to show again once it is gone.
"use strict";

const PAGE = 24;
const IMAGE_TYPES = "JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC or AVIF";
const $ = (id) => document.getElementById(id);
const el = {
  drop: $("dropzone"), file: $("file-input"), preview: $("query-preview"), dropTitle: $("drop-title"),
  dropHint: $("drop-hint"), form: $("keyword-form"), keyword: $("keyword"), tagsBox: $("tags-box"),
  chips: $("tag-chips"), trail: $("trail"), trailList: $("trail-list"), heading: $("results-heading"),
  status: $("status"), grid: $("grid"), more: $("more"), marksBar: $("marks"), marksText: $("marks-text"),
  refine: $("refine"), clearMarks: $("clear-marks"), cropOpen: $("crop-open"), cropWhole: $("crop-whole"),
  cropper: $("cropper"), cropStage: $("crop-stage"), cropImage: $("crop-image"), cropBox: $("crop-box"),
  cropCancel: $("crop-cancel"),
};
const MAX_MARKED = 50;       // the API's limit on positive and negative ids together
const uploads = new Map();   // upload key -> {blob, url}
let current = {query: {kind: "none"}, trail: [], marks: noMarks()};
let shown = [];              // results on screen
let total = 0;
let run = 0;                 // increases with every new search, so late answers to old ones are dropped
let inflight = null;         // AbortController of the request in flight

// ---- URLs -------------------------------------------------------------------------------------------

function noMarks() {
  return {pos: [], neg: []};
}

const ids = (value) => (value || "").split(",").map((t) => t.trim()).filter(Boolean);
const cropText = (crop) => crop.map((v) => Number(v.toFixed(4))).join(",");

function urlFor(query, marks = noMarks()) {
  const p = new URLSearchParams();
  if (query.kind === "text" && query.q) p.set("q", query.q);
  if (query.kind === "similar") p.set("similar", query.id);
  if (query.kind === "image" || (query.kind === "refine" && query.key)) p.set("image", query.key);
  if (query.kind === "refine") {
    if (query.pos.length) p.set("pos", query.pos.join(","));
    if (query.neg.length) p.set("neg", query.neg.join(","));
  }
  if (query.crop) p.set("crop", cropText(query.crop));
  if (query.tags && query.tags.length) p.set("tags", query.tags.join(","));
  if (marks.pos.length) p.set("more", marks.pos.join(","));
  if (marks.neg.length) p.set("less", marks.neg.join(","));
  const s = p.toString().replace(/%2C/g, ",");
  return s ? `/?${s}` : "/";
}

function stateFromUrl() {
  const p = new URLSearchParams(location.search);
  const tags = ids(p.get("tags"));
  const crop = ids(p.get("crop")).map(Number);
  const withCrop = (query) => (crop.length === 4 && crop.every(Number.isFinite) ? {...query, crop} : query);
  let query = {kind: "none"};
  if (p.get("pos") || p.get("neg")) {
    query = {kind: "refine", pos: ids(p.get("pos")), neg: ids(p.get("neg")), tags};
    if (p.get("image")) query = withCrop({...query, key: p.get("image")});
  } else if (p.get("similar")) query = withCrop({kind: "similar", id: p.get("similar"), tags});
  else if (p.get("image")) query = withCrop({kind: "image", key: p.get("image"), tags});
  else if (p.get("q") || tags.length) query = {kind: "text", q: (p.get("q") || "").trim(), tags};
  return {query, trail: [], marks: {pos: ids(p.get("more")), neg: ids(p.get("less"))}};
}

function apiParams(query, offset) {
  const p = new URLSearchParams({limit: PAGE, offset});
  if (query.tags && query.tags.length) p.set("tags", query.tags.join(","));
  if (query.kind === "text") p.set("q", query.q);
  if (query.crop && query.kind !== "refine") p.set("crop", cropText(query.crop));
  return p;
}

// ---- talking to the API -----------------------------------------------------------------------------

class ApiError extends Error {}

// Words a person understands, from an HTTP status and the API's error body.
function explain(status, body) {
  const message = body && body.error && body.error.message;
  switch (status) {
    case 413: return "That picture is too large. Try a smaller file (a screenshot of it works too).";
    case 415: return `That file isn't a picture this search can read. Use a ${IMAGE_TYPES} image.`;
    case 422: return "That picture could not be read: the file seems damaged or incomplete. Try another one.";
    case 404: return "That picture is no longer in the collection. Start a new search.";
    case 409: return "The collection was indexed with other model settings than the server now uses, so " +
                     "pictures cannot be compared. Whoever runs this service needs to index it again.";
    case 503: return "The search service isn't ready yet (it may still be starting). Try again in a moment.";
  }
  if (status >= 500) return "Something went wrong on the server. Try again in a moment.";
  return message ? `That search didn't work: ${message}` : "That search didn't work. Try again.";
}

// The uploaded picture as base64, read once, for a refine request's image_base64.
async function base64Of(key) {
  const upload = uploads.get(key);
  if (!upload.base64) {
    upload.base64 = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new ApiError("That picture could not be read again. Drop it once more."));
      reader.readAsDataURL(upload.blob);
    });
  }
  return upload.base64;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {headers: {Accept: "application/json"}, ...options});
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("Can't reach the search service. Check that it is running and try again.");
  }
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: a proxy error page, say */ }
  if (!response.ok || body === null) throw new ApiError(explain(response.ok ? 502 : response.status, body));
  return body;
}

async function fetchPage(query, offset, signal) {
  const params = apiParams(query, offset);
  if (query.kind === "refine") {
    const body = {positive: query.pos, negative: query.neg, tags: query.tags || [], limit: PAGE, offset};
    if (query.key) body.image_base64 = await base64Of(query.key);
    if (query.key && query.crop) body.crop = query.crop;
    return api("/api/search/refine", {method: "POST", body: JSON.stringify(body), signal,
                                      headers: {Accept: "application/json", "Content-Type": "application/json"}});
  }
  if (query.kind === "text") return api(`/api/search?${params}`, {signal});
  if (query.kind === "similar") return api(`/api/images/${encodeURIComponent(query.id)}/similar?${params}`, {signal});
  const form = new FormData();
  form.append("image", uploads.get(query.key).blob, query.name || "picture");
  return api(`/api/search/image?${params}`, {method: "POST", body: form, signal});
}

// ---- navigation -------------------------------------------------------------------------------------

// Every new query is a history entry of its own: back/forward walk through them.
function go(query, trail) {
  if (query.kind === "text" && !query.q && !(query.tags || []).length) query = {kind: "none"};
  const state = {query, trail: query.kind === "none" ? [] : trail, marks: noMarks()};
  history.pushState(state, "", urlFor(query));
  show(state);
}

window.addEventListener("popstate", (event) => show(event.state || stateFromUrl()));

function show(state) {
  current = {...state, marks: state.marks || noMarks()};
  renderMarks();
  closeCropper();
  const {query} = state;
  document.title = query.kind === "none" ? "lookalike: image search" : `${describe(query)} · lookalike`;
  renderQuery(query);
  renderTrail(state.trail, query);
  renderChipsSelection(query.tags || []);
  search(state);
}

async function search(state, offset = 0) {
  const {query} = state;
  const mine = ++run;
  // "Load more" from the keyboard: carry on from the first new result (read before the button is disabled).
  const focusNew = offset > 0 && document.activeElement === el.more;
  if (inflight) inflight.abort();
  inflight = null;
  if (offset === 0) { shown = []; total = 0; }

  if (query.kind === "none") {
    clearResults();
    intro();
    return;
  }
  if ((query.kind === "image" || query.kind === "refine") && query.key && !uploads.has(query.key)) {
    clearResults();
    if (state.snapshot) {
      renderResults(state.snapshot.results, query, false);
      setStatus("These are the earlier results for your picture. The picture itself is not kept after the " +
                "page reloads: drop it again to search more.");
    } else {
      setStatus("This search was made with an uploaded picture, and pictures are not kept in links. " +
                "Drop or paste the picture again to search.");
    }
    return;
  }

  const controller = new AbortController();
  inflight = controller;
  if (offset === 0) clearResults();
  el.more.disabled = true;
  setStatus(query.kind === "image" ? "Looking at your picture…" : "Searching…", "loading");
  if (query.kind === "similar" && !query.name) describeSimilar(query);

  let body;
  try {
    body = await fetchPage(query, offset, controller.signal);
  } catch (err) {
    if (err.name === "AbortError" || mine !== run) return;
    el.more.disabled = false;
    setStatus(err.message, "error", () => search(current, offset));
    return;
  }
  if (mine !== run) return;
  inflight = null;
  total = body.total;
  renderResults(body.results, query, focusNew);
  shown = shown.concat(body.results);
  summarise(query, body.took_ms);
  if (query.key && history.state && history.state.query.key === query.key) {
    // Kept so the results can be shown again after a reload, when the picture itself is gone.
    history.replaceState({...history.state, snapshot: {results: shown, total}}, "", location.href);
  }
}

// A bookmarked "more like this" link only has the id: ask for the file name to show as the query.
async function describeSimilar(query) {
  try {
    const doc = await api(`/api/images/${encodeURIComponent(query.id)}`);
    if (current.query !== query) return;
    query.name = doc.filename;
    history.replaceState({...history.state, query}, "", location.href);
    renderQuery(query);
  } catch { /* the search itself reports a missing picture */ }
}

// ---- rendering --------------------------------------------------------------------------------------

const pasteKey = /Mac|iPhone|iPad/.test(navigator.platform) ? "⌘V" : "Ctrl+V";
// On touch screens there is nothing to drag from and no paste key: say "tap" instead.
const touch = window.matchMedia("(pointer: coarse)").matches;

function renderQuery(query) {
  el.keyword.value = query.kind === "text" ? query.q : "";
  let src = "";
  if (query.key) src = uploads.has(query.key) ? uploads.get(query.key).url : query.thumb || "";
  else if (query.kind === "similar") src = thumbUrl(query.id);
  else if (query.kind === "refine" && query.pos.length) src = thumbUrl(query.pos[0]);
  el.preview.hidden = !src;
  if (src) el.preview.src = src;
  el.preview.alt = query.kind === "none" || query.kind === "text" ? "" : "The picture you are searching with";
  el.drop.classList.toggle("has-preview", Boolean(src));
  const part = query.crop ? "part of " : "";
  // A region can be searched in a picture of the collection or an uploaded one still in memory.
  el.cropOpen.hidden = !(query.kind === "similar" || (query.kind === "image" && uploads.has(query.key)));
  el.cropWhole.hidden = !(query.crop && query.kind !== "refine");
  if (query.kind === "image") {
    el.dropTitle.textContent = `Pictures like ${part}${query.name || "your picture"}`;
  } else if (query.kind === "similar") {
    el.dropTitle.textContent = `Pictures like ${part}${query.name || "this one"}`;
  } else if (query.kind === "refine") {
    el.dropTitle.textContent = describe(query);
  } else {
    el.dropTitle.textContent = touch ? "Tap to choose a picture" : "Drop a picture here";
  }
  if (touch) {
    el.dropHint.textContent = src ? "Tap to search with another picture" : "and find the ones that look like it";
  } else {
    el.dropHint.textContent = src
      ? `Drop, paste (${pasteKey}) or click to search with another picture`
      : `or click to choose one, or paste with ${pasteKey}`;
  }
}

function thumbUrl(id) {
  return `/api/images/${encodeURIComponent(id)}/thumbnail`;
}

function describe(query) {
  const tags = query.tags && query.tags.length ? ` in ${query.tags.join(" + ")}` : "";
  if (query.kind === "text") return (query.q ? `“${query.q}”` : "Tagged") + tags;
  const part = query.crop ? "part of " : "";
  if (query.kind === "similar") return `Like ${part}${query.name || "a picture"}${tags}`;
  if (query.kind === "image") return `${query.crop ? "Part of your" : "Your"} picture${query.name ? ` (${query.name})` : ""}${tags}`;
  if (query.kind === "refine") {
    const liked = query.pos.length + (query.key ? 1 : 0);
    const less = query.neg.length ? `, less like ${query.neg.length}` : "";
    return `More like ${liked} picture${liked === 1 ? "" : "s"}${less}${tags}`;
  }
  return "Start";
}

function renderTrail(trail, query) {
  el.trailList.replaceChildren();
  el.trail.hidden = trail.length === 0;
  trail.forEach((step, i) => {
    const link = document.createElement("a");
    link.href = urlFor(step);
    link.addEventListener("click", (event) => {
      if (plainClick(event)) { event.preventDefault(); go(step, trail.slice(0, i)); }
    });
    const src = step.key ? step.thumb || "" : step.kind === "similar" ? thumbUrl(step.id)
      : step.kind === "refine" && step.pos.length ? thumbUrl(step.pos[0]) : "";
    if (src) link.append(img(src, "crumb-thumb"));
    link.append(describe(step));
    el.trailList.append(li(link));
  });
  if (trail.length) {
    const here = document.createElement("span");
    here.setAttribute("aria-current", "page");
    here.textContent = describe(query);
    el.trailList.append(li(here));
  }
}

function renderResults(results, query, focusFirst) {
  const visual = query.kind !== "text";
  const fragment = document.createDocumentFragment();
  for (const hit of results) {
    const link = document.createElement("a");
    link.className = "hit";
    link.href = urlFor({kind: "similar", id: hit.id, tags: query.tags || []});
    link.title = `Find more pictures like ${hit.filename}`;
    link.addEventListener("click", (event) => {
      if (plainClick(event)) { event.preventDefault(); refine(hit); }
    });
    const frame = document.createElement("span");
    frame.className = "frame";
    const picture = img(hit.thumbnail_url, "");
    picture.loading = "lazy";
    picture.decoding = "async";
    picture.addEventListener("error", () => frame.classList.add("broken"), {once: true});
    frame.append(picture);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.append(span("visually-hidden", "More like "), span("name", hit.filename));
    const score = formatScore(hit.score, visual);
    if (score) meta.append(span("score", score));
    meta.append(span("card-tags", hit.tags && hit.tags.length ? hit.tags.join(" · ") : "\u00a0"));
    link.append(frame, meta);
    const item = li(link);
    item.className = "card";
    item.dataset.id = hit.id;
    // Upright width / height, for the justified rows (kept within 1:4 and 4:1: beyond, the picture is cut).
    item.ratio = Math.min(4, Math.max(0.25, (hit.width || 4) / (hit.height || 3)));
    item.append(markButtons(hit));
    fragment.append(item);
  }
  const first = fragment.firstElementChild;
  el.grid.append(fragment);
  layout();
  renderMarks();
  if (focusFirst && first) first.querySelector("a").focus();
}

// "More like this" and "not like this" toggles on a result card.
function markButtons(hit) {
  const group = document.createElement("span");
  group.className = "toggles";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Mark ${hit.filename}`);
  for (const [kind, text, label] of [["pos", "+", "More like this"], ["neg", "−", "Not like this"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `mark mark-${kind}`;
    button.dataset.kind = kind;
    button.textContent = text;
    button.title = label;
    button.setAttribute("aria-label", `${label}: ${hit.filename}`);
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => toggleMark(hit.id, kind));
    group.append(button);
  }
  return group;
}

// ---- justified rows ----------------------------------------------------------------------------------

// Rows of pictures as photo sites lay them out: every picture whole, at its own aspect, each row as high
// as it needs to be to fill the width exactly (the last row at the target height, not stretched).
function layout() {
  const width = el.grid.clientWidth;
  if (!width) return;
  const gap = parseFloat(getComputedStyle(el.grid).columnGap) || 0;
  const target = width < 560 ? 120 : 200;   // px: about three pictures a row on a phone, five or six wide
  const cards = [...el.grid.children];
  let row = [];
  let ratios = 0;
  const place = (items, height, fill) => {
    let used = 0;
    items.forEach((card, i) => {
      let w = Math.floor(card.ratio * height);
      if (fill && i === items.length - 1) w = width - gap * (items.length - 1) - used;  // the rounding left over
      used += w;
      card.style.width = `${w}px`;
      card.querySelector(".frame").style.height = `${Math.round(height)}px`;
    });
  };
  for (const card of cards) {
    row.push(card);
    ratios += card.ratio;
    const height = (width - gap * (row.length - 1)) / ratios;
    if (height <= target) {
      place(row, height, true);
      row = [];
      ratios = 0;
    }
  }
  if (row.length) place(row, Math.min(target, (width - gap * (row.length - 1)) / ratios), false);
}

let layoutFrame = 0;
new ResizeObserver(() => {
  cancelAnimationFrame(layoutFrame);
  layoutFrame = requestAnimationFrame(layout);
}).observe(el.grid);

function formatScore(score, visual) {
  // Keyword scores (BM25) have no scale a person can read, and near 0 for a word most pictures share:
  // the order says it all. Visual scores are cosine similarities, shown as a percentage.
  if (!visual || typeof score !== "number") return "";
  // Rounded down, so only the same picture (cosine 1, give or take float error) says 100%.
  return `${Math.floor(Math.max(0, Math.min(1, score + 0.0005)) * 100)}% similar`;
}

function summarise(query, tookMs) {
  const count = shown.length;
  el.more.hidden = count >= total || count === 0;
  el.more.disabled = false;
  el.more.textContent = `Load more (${(total - count).toLocaleString()} left)`;
  if (count === 0) {
    const withTags = query.tags && query.tags.length ? ` with the tag${query.tags.length > 1 ? "s" : ""} ` +
      query.tags.join(" and ") : "";
    const tip = withTags ? " Try removing a tag filter." : query.kind === "text" ? " Try other or fewer words." : "";
    const what = query.kind === "text" && query.q ? `for “${query.q}”` : query.kind === "text" ? "" : "like this one";
    setStatus(`No pictures found ${what}${withTags}.${tip}`.replace(/\s+/g, " "), "empty");
    return;
  }
  let took = "";
  if (typeof tookMs === "number") took = tookMs < 1000 ? ` in ${Math.max(1, Math.round(tookMs))} ms`
                                                       : ` in ${(tookMs / 1000).toFixed(1)} s`;
  setStatus(`Showing ${count.toLocaleString()} of ${total.toLocaleString()}${took}. ` +
            `${touch ? "Tap" : "Click"} a picture to find more like it, or mark several with + and − and refine.`);
}

function clearResults() {
  el.grid.replaceChildren();
  el.more.hidden = true;
}

async function intro() {
  const how = touch ? "Choose a picture or type a word" : `Drop a picture, paste one (${pasteKey}), or type a word`;
  setStatus(`${how} to start.`);
  const mine = statusVersion;
  try {
    const stats = await api("/api/stats");
    const count = stats.count ?? (stats.store && stats.store.count);
    if (mine !== statusVersion || typeof count !== "number") return;  // something else was said meanwhile
    setStatus(count === 0
      ? "The collection is empty: index some pictures first (see the README), then search here."
      : `${count.toLocaleString()} pictures to search. ${how}.`);
  } catch { /* the intro text above is enough */ }
}

// kind: "" (plain), "loading", "empty" or "error"; retry adds a "Try again" button.
let statusVersion = 0;
function setStatus(text, kind = "", retry = null) {
  statusVersion += 1;
  el.status.className = `status ${kind}`;
  el.status.setAttribute("role", kind === "error" ? "alert" : "status");
  el.status.replaceChildren(span("", text));
  if (retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Try again";
    button.addEventListener("click", retry);
    el.status.append(button);
  }
}

// ---- tag chips --------------------------------------------------------------------------------------

async function loadTags() {
  let body;
  try { body = await api("/api/tags"); } catch { return; }  // no chips; searching still works
  const tags = body.tags || [];
  el.tagsBox.hidden = tags.length === 0;
  el.chips.replaceChildren(...tags.map(({tag, count}) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.dataset.tag = tag;
    chip.append(span("", tag), span("count", count.toLocaleString()));
    chip.setAttribute("aria-label", `${tag} (${count} pictures)`);
    chip.addEventListener("click", () => toggleTag(tag));
    return li(chip);
  }));
  renderChipsSelection(current.query.tags || []);
}

function renderChipsSelection(tags) {
  for (const chip of el.chips.querySelectorAll(".chip")) {
    chip.setAttribute("aria-pressed", String(tags.includes(chip.dataset.tag)));
  }
}

function toggleTag(tag) {
  const query = current.query.kind === "none" ? {kind: "text", q: ""} : current.query;
  const tags = query.tags || [];
  const next = tags.includes(tag) ? tags.filter((t) => t !== tag) : [...tags, tag];
  go({...query, tags: next}, current.trail);
}

// ---- starting searches ------------------------------------------------------------------------------

function currentTags() {
  return current.query.tags || [];
}

function refine(hit) {
  go({kind: "similar", id: hit.id, name: hit.filename, tags: currentTags()}, [...current.trail, current.query]);
}

// ---- marks: "more like this", "not like this", then refine -----------------------------------------

// What the current query already counts as positive and negative: a refine from it keeps them.
function baseOf(query) {
  if (query.kind === "similar") return {pos: [query.id], neg: []};
  if (query.kind === "image") return {pos: [], neg: [], key: query.key, crop: query.crop};
  if (query.kind === "refine") return {pos: query.pos, neg: query.neg, key: query.key, crop: query.crop};
  return {pos: [], neg: []};
}

function refineQuery() {
  const base = baseOf(current.query);
  const pos = [...new Set([...base.pos, ...current.marks.pos])];
  const neg = [...new Set([...base.neg, ...current.marks.neg])].filter((id) => !pos.includes(id));
  const query = {kind: "refine", pos, neg, tags: currentTags()};
  if (base.key) Object.assign(query, {key: base.key, name: current.query.name, thumb: current.query.thumb},
                              base.crop ? {crop: base.crop} : {});
  return query;
}

function toggleMark(id, kind) {
  const other = kind === "pos" ? "neg" : "pos";
  const marks = {pos: [...current.marks.pos], neg: [...current.marks.neg]};
  marks[other] = marks[other].filter((m) => m !== id);
  marks[kind] = marks[kind].includes(id) ? marks[kind].filter((m) => m !== id) : [...marks[kind], id];
  setMarks(marks);
}

// Marks are part of the page's state (not a new search): the history entry and its URL are updated.
function setMarks(marks) {
  current = {...current, marks};
  history.replaceState({...(history.state || {}), query: current.query, trail: current.trail, marks}, "",
                       urlFor(current.query, marks));
  renderMarks();
}

function renderMarks() {
  const {pos, neg} = current.marks;
  for (const card of el.grid.querySelectorAll(".card")) {
    const kind = pos.includes(card.dataset.id) ? "pos" : neg.includes(card.dataset.id) ? "neg" : "";
    card.classList.toggle("marked-pos", kind === "pos");
    card.classList.toggle("marked-neg", kind === "neg");
    for (const button of card.querySelectorAll(".mark")) {
      button.setAttribute("aria-pressed", String(button.dataset.kind === kind));
    }
  }
  const count = pos.length + neg.length;
  el.marksBar.hidden = count === 0;
  if (!count) return;
  const query = refineQuery();
  const tooMany = query.pos.length + query.neg.length > MAX_MARKED;
  const positives = query.pos.length + (query.key ? 1 : 0);
  el.refine.textContent = `Refine (${count})`;
  el.refine.disabled = tooMany || positives === 0;
  el.marksText.textContent = tooMany ? `At most ${MAX_MARKED} marked pictures in all: clear some marks.`
    : positives === 0 ? "Mark at least one picture with + to refine."
    : `${pos.length} more like this, ${neg.length} not like this`;
}

el.refine.addEventListener("click", () => go(refineQuery(), [...current.trail, current.query]));
el.clearMarks.addEventListener("click", () => setMarks(noMarks()));

// ---- region search: drag a box on the query picture ------------------------------------------------

function openCropper() {
  const query = current.query;
  el.cropImage.src = query.kind === "similar" ? `/api/images/${encodeURIComponent(query.id)}/file`
                                              : uploads.get(query.key).url;
  el.cropBox.hidden = true;
  el.cropper.hidden = false;
  el.cropOpen.setAttribute("aria-expanded", "true");
}

// Shown as large as fits (at most 480 x 360 px), at the picture's own aspect, so the box maps onto it.
el.cropImage.addEventListener("load", () => {
  const {naturalWidth: w, naturalHeight: h} = el.cropImage;
  const room = el.cropper.parentElement.clientWidth;
  const scale = Math.min(480 / w, 360 / h, room / w);
  Object.assign(el.cropImage.style, {width: `${Math.round(w * scale)}px`, height: `${Math.round(h * scale)}px`});
});

function closeCropper() {
  el.cropper.hidden = true;
  el.cropOpen.setAttribute("aria-expanded", "false");
}

let dragStart = null;
const clamp01 = (v) => Math.min(1, Math.max(0, v));
function relative(event) {
  const box = el.cropImage.getBoundingClientRect();
  return [clamp01((event.clientX - box.left) / box.width), clamp01((event.clientY - box.top) / box.height)];
}
function dragRect(event) {
  const [x, y] = relative(event);
  const [x0, y0] = dragStart;
  return [Math.min(x, x0), Math.min(y, y0), Math.abs(x - x0), Math.abs(y - y0)];
}
function drawBox([x, y, w, h]) {
  Object.assign(el.cropBox.style, {left: `${x * 100}%`, top: `${y * 100}%`, width: `${w * 100}%`,
                                   height: `${h * 100}%`});
  el.cropBox.hidden = false;
}

el.cropStage.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  dragStart = relative(event);
  el.cropStage.setPointerCapture(event.pointerId);
  drawBox([...dragStart, 0, 0]);
});
el.cropStage.addEventListener("pointermove", (event) => {
  if (dragStart) drawBox(dragRect(event));
});
el.cropStage.addEventListener("pointerup", (event) => {
  if (!dragStart) return;
  const [x, y, w, h] = dragRect(event);
  dragStart = null;
  if (w < 0.03 || h < 0.03) {  // a click, not a box
    el.cropBox.hidden = true;
    return;
  }
  const {crop, ...whole} = current.query;
  go({...whole, crop: [x, y, Math.min(w, 1 - x), Math.min(h, 1 - y)]}, [...current.trail, current.query]);
});
el.cropStage.addEventListener("pointercancel", () => { dragStart = null; el.cropBox.hidden = true; });
el.cropOpen.addEventListener("click", () => (el.cropper.hidden ? openCropper() : closeCropper()));
el.cropCancel.addEventListener("click", closeCropper);
el.cropWhole.addEventListener("click", () => {
  const {crop, ...whole} = current.query;
  go(whole, [...current.trail, current.query]);
});

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = el.keyword.value.trim();
  if (!q && !currentTags().length) {
    setStatus("Type a word to search for: a file name or a tag.", "empty");
    el.keyword.focus();
    return;
  }
  go({kind: "text", q, tags: currentTags()}, []);
});

async function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    setStatus(`“${file.name}” isn't a picture. Drop a ${IMAGE_TYPES} image.`, "error");
    return;
  }
  const key = Math.random().toString(36).slice(2, 10);
  uploads.set(key, {blob: file, url: URL.createObjectURL(file)});
  go({kind: "image", key, name: file.name || "pasted picture", thumb: await tinyPreview(file), tags: currentTags()}, []);
}

// A small data-URL copy of the picture for history.state and the trail (the Blob does not survive reloads).
async function tinyPreview(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const scale = 96 / Math.max(bitmap.width, bitmap.height);
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL("image/jpeg", 0.7);
  } catch {
    return "";  // the browser can't draw it (a TIFF, say); the server may still read it
  }
}

el.drop.addEventListener("click", () => el.file.click());
el.preview.addEventListener("error", () => { el.preview.hidden = true; el.drop.classList.remove("has-preview"); });
el.file.addEventListener("change", () => {
  useFile(el.file.files[0]);
  el.file.value = "";  // choosing the same file again still fires "change"
});
el.more.addEventListener("click", () => search(current, shown.length));

// Drops are taken anywhere on the page (a miss would make the browser open the file instead).
let dragDepth = 0;
const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!carriesFiles(event)) return;
  dragDepth += 1;
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) document.body.classList.remove("dragging");
});
document.addEventListener("dragover", (event) => {
  if (carriesFiles(event)) { event.preventDefault(); event.dataTransfer.dropEffect = "copy"; }
});
document.addEventListener("drop", (event) => {
  dragDepth = 0;
  document.body.classList.remove("dragging");
  if (!carriesFiles(event)) return;
  event.preventDefault();
  useFile(event.dataTransfer.files[0]);
});

document.addEventListener("paste", (event) => {
  const files = [...(event.clipboardData ? event.clipboardData.files : [])];
  if (!files.length) return;  // pasting text into the keyword box works as usual
  event.preventDefault();
  useFile(files.find((f) => f.type.startsWith("image/")) || files[0]);
});

// ---- small DOM helpers ------------------------------------------------------------------------------

function plainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

function span(className, text) {
  const s = document.createElement("span");
  if (className) s.className = className;
  s.textContent = text;
  return s;
}

function li(child) {
  const item = document.createElement("li");
  item.append(child);
  return item;
}

function img(src, className) {
  const image = document.createElement("img");
  image.src = src;
  image.alt = "";
  if (className) image.className = className;
  return image;
}

// ---- start ------------------------------------------------------------------------------------------

const initial = history.state && history.state.query ? history.state : stateFromUrl();
history.replaceState(initial, "", location.href);
show(initial);
loadTags();
