// The page's state, in one object, and the URL and history entry made from it.
//
// A query is one of
//   {kind: "none", tags, filters}                 no search: the collection, newest taken first
//   {kind: "text", q, tags}                       words (q may be "" when only tags are chosen)
//   {kind: "similar", id, name?, tags}            "more like this" indexed picture
//   {kind: "image", key, name, thumb, tags}       an uploaded picture (its bytes are kept by uploads.js)
//   {kind: "refine", pos, neg, key?, crop?, name?, thumb?, tags}  more like the `pos` ids (and the uploaded
//                                                 picture `key`, if any), less like the `neg` ids
//   {kind: "duplicates", level, minScore, tags}   not a search: the Duplicates view (duplicates.js); level
//                                                 "near" or "exact", minScore null for the server's default
// similar and image queries may have a `crop` [x, y, w, h] (fractions): search by that region alone.
// `trail` is the queries that led here; `marks` the results marked "more like this" (pos) and "not like
// this" (neg), not yet refined; `snapshot` the results an uploaded picture gave, to show after a reload.
// history.state holds {query, trail, marks, snapshot} and the URL shows it (?q=, ?similar=, ?image=,
// ?pos=&neg=, &crop=, &tags=; marks in &more= and &less=; ?view=duplicates&level=&min_score=), so
// back/forward, reload and bookmarks work.
// Every query also has `filters` (noFilters()): taken_from, taken_to (YYYY-MM-DD) and the lists camera,
// folder and type, in the URL under the API's own parameter names (&camera=...&camera=...).

export const PAGE = 24;           // results asked for at a time
export const MAX_MARKED = 50;     // the API's limit on positive and negative ids together

export const noMarks = () => ({pos: [], neg: []});
export const FILTER_LISTS = ["camera", "folder", "type"];
export const noFilters = () => ({taken_from: "", taken_to: "", camera: [], folder: [], type: []});
const NONE = {kind: "none", tags: [], filters: noFilters()};

// The filters of `query` added to URL (or API) parameters `p`, as the API names them.
export function addFilters(p, query) {
  const f = query.filters || noFilters();
  for (const name of ["taken_from", "taken_to"]) if (f[name]) p.set(name, f[name]);
  for (const name of FILTER_LISTS) for (const value of f[name] || []) p.append(name, value);
  return p;
}

export function hasFilters(query) {
  const f = query.filters || noFilters();
  return Boolean(f.taken_from || f.taken_to || FILTER_LISTS.some((name) => (f[name] || []).length));
}

function filtersOfUrl(p) {
  const day = (value) => (/^\d{4}-\d{2}-\d{2}$/.test(value || "") ? value : "");
  const f = {...noFilters(), taken_from: day(p.get("taken_from")), taken_to: day(p.get("taken_to"))};
  for (const name of FILTER_LISTS) f[name] = p.getAll(name).filter(Boolean);
  return f;
}

export const state = {
  query: NONE, trail: [], marks: noMarks(), snapshot: null,   // what is asked: history.state and the URL
  results: [], total: 0,                                      // what is on screen
};

const ids = (value) => (value || "").split(",").map((t) => t.trim()).filter(Boolean);
export const cropText = (crop) => crop.map((v) => Number(v.toFixed(4))).join(",");

// The one place a URL is made from a query (and its marks).
export function urlOf(query, marks = noMarks()) {
  const p = new URLSearchParams();
  if (query.kind === "duplicates") {
    p.set("view", "duplicates");
    if (query.level !== "near") p.set("level", query.level);
    if (query.minScore !== null && query.level === "near") p.set("min_score", String(query.minScore));
  }
  if (query.kind === "text" && query.q) p.set("q", query.q);
  if (query.kind === "similar") p.set("similar", query.id);
  if (query.kind === "image" || (query.kind === "refine" && query.key)) p.set("image", query.key);
  if (query.kind === "refine") {
    if (query.pos.length) p.set("pos", query.pos.join(","));
    if (query.neg.length) p.set("neg", query.neg.join(","));
  }
  if (query.crop) p.set("crop", cropText(query.crop));
  if (query.tags.length) p.set("tags", query.tags.join(","));
  addFilters(p, query);
  if (marks.pos.length) p.set("more", marks.pos.join(","));
  if (marks.neg.length) p.set("less", marks.neg.join(","));
  const s = p.toString().replace(/%2C/g, ",");
  return s ? `/?${s}` : "/";
}

// The state a URL stands for (a bookmark, a shared link, a reload of an entry without state).
function entryOfUrl() {
  const p = new URLSearchParams(location.search);
  const tags = ids(p.get("tags"));
  const filters = filtersOfUrl(p);
  const crop = ids(p.get("crop")).map(Number);
  const withCrop = (query) => (crop.length === 4 && crop.every(Number.isFinite) ? {...query, crop} : query);
  let query = {...NONE, tags, filters};
  if (p.get("view") === "duplicates") {
    const minScore = parseFloat(p.get("min_score"));
    query = {kind: "duplicates", level: p.get("level") === "exact" ? "exact" : "near",
             minScore: Number.isFinite(minScore) ? minScore : null, tags, filters};
  } else if (p.get("pos") || p.get("neg")) {
    query = {kind: "refine", pos: ids(p.get("pos")), neg: ids(p.get("neg")), tags, filters};
    if (p.get("image")) query = withCrop({...query, key: p.get("image")});
  } else if (p.get("similar")) query = withCrop({kind: "similar", id: p.get("similar"), tags, filters});
  else if (p.get("image")) query = withCrop({kind: "image", key: p.get("image"), tags, filters});
  else if (p.get("q")) query = {kind: "text", q: p.get("q").trim(), tags, filters};
  return {query, trail: [], marks: {pos: ids(p.get("more")), neg: ids(p.get("less"))}};
}

// The one place history entries are written: from the state, at the URL made from it.
function save(how, url = urlOf(state.query, state.marks)) {
  const {query, trail, marks, snapshot} = state;
  history[how]({query, trail, marks, snapshot}, "", url);
}

// A new query: a history entry of its own, so back/forward walk through them.
export function navigate(query, trail) {
  // words no more: the collection, as the tags and filters narrow it
  if (query.kind === "text" && !query.q) query = {...NONE, tags: query.tags, filters: query.filters || noFilters()};
  Object.assign(state, {query, trail: query.kind === "none" ? [] : trail, marks: noMarks(), snapshot: null});
  save("pushState");
}

// Back (or forward) to a history entry; an entry without state (a link to #results-heading, say) is what
// its URL says.
export function restore(entry) {
  const {query, trail, marks, snapshot} = entry && entry.query ? entry : entryOfUrl();
  // {tags: [], filters} first: an entry written by an earlier version of the page may hold neither.
  Object.assign(state, {query: {tags: [], filters: noFilters(), ...query}, trail, marks: marks || noMarks(),
                        snapshot: snapshot || null});
}

// The page opens on its history entry (a reload) or its URL (a bookmark or link), kept as it was typed.
export function start() {
  restore(history.state);
  save("replaceState", location.href);
}

// Marks are not a new search: the current entry and its URL change.
export function setMarks(marks) {
  state.marks = marks;
  save("replaceState");
}

// A bookmarked "more like this" has only the id: the name, once known, is kept with the query.
export function nameQuery(name) {
  state.query = {...state.query, name};
  save("replaceState");
}

// The results of an uploaded picture, kept to be shown again once the picture itself is gone (a reload).
export function keepSnapshot() {
  state.snapshot = {results: state.results, total: state.total};
  save("replaceState");
}

// What the current query already counts as positive and negative: a refine from it keeps them.
function baseOf(query) {
  if (query.kind === "similar") return {pos: [query.id], neg: []};
  if (query.kind === "image") return {pos: [], neg: [], key: query.key, crop: query.crop};
  if (query.kind === "refine") return {pos: query.pos, neg: query.neg, key: query.key, crop: query.crop};
  return {pos: [], neg: []};
}

// The refine search the current query and marks make.
export function refineQuery() {
  const base = baseOf(state.query);
  const pos = [...new Set([...base.pos, ...state.marks.pos])];
  const neg = [...new Set([...base.neg, ...state.marks.neg])].filter((id) => !pos.includes(id));
  const query = {kind: "refine", pos, neg, tags: state.query.tags, filters: state.query.filters};
  if (base.key) Object.assign(query, {key: base.key, name: state.query.name, thumb: state.query.thumb},
                              base.crop ? {crop: base.crop} : {});
  return query;
}

// The marks with `id` marked `kind` ("pos" or "neg"), or unmarked if it was already.
export function toggledMarks(id, kind) {
  const other = kind === "pos" ? "neg" : "pos";
  const marks = {pos: [...state.marks.pos], neg: [...state.marks.neg]};
  marks[other] = marks[other].filter((m) => m !== id);
  marks[kind] = marks[kind].includes(id) ? marks[kind].filter((m) => m !== id) : [...marks[kind], id];
  return marks;
}
