// lookalike web page: talks only to the JSON API (/api/...). No framework, no build step: ES modules.
// This one starts the page and runs searches; state.js holds what is asked, the other modules draw it.

import {api, facetsOf, fileUrl, oneAtATime, searchPage} from "./api.js";
import {closeCropper, initCropper, openCropper} from "./crop.js";
import {el, pasteKey, touch} from "./dom.js";
import {hideDuplicates, initDuplicates, showDuplicates} from "./duplicates.js";
import {clearResults, followWidth, renderCardMarks, renderResults} from "./grid.js";
import {initPictureInput} from "./input.js";
import {showLabels} from "./labels.js";
import {IMAGE_TYPES} from "./messages.js";
import {PAGE, hasFilters, keepSnapshot, nameQuery, navigate, noFilters, noMarks, refineQuery, restore, setMarks,
        start, state, toggledMarks} from "./state.js";
import {blobOf, has, keep, tinyPreview} from "./uploads.js";
import {describe, renderChips, renderChipsSelection, renderDates, renderFacets, renderMarksBar, renderQuery,
        renderTrail, setStatus} from "./view.js";

const beginSearch = oneAtATime();
const beginFacets = oneAtATime();

// ---- navigation ---------------------------------------------------------------------------------------

function go(query, trail) {
  navigate(query, trail);
  show();
}

// Draw the current state and run its search (or show the Duplicates view).
function show() {
  const {query} = state;
  if (query.kind === "duplicates") {
    beginSearch();   // a search still in flight is dropped
    closeCropper();
    showDuplicates(query);
    return;
  }
  hideDuplicates();
  renderMarks();
  closeCropper();
  document.title = query.kind === "none" && !query.tags.length && !hasFilters(query)
    ? "lookalike: image search" : `${describe(query)} · lookalike`;
  renderQuery(query);
  showLabels(query.kind === "similar" ? query.id : null);
  renderTrail(state.trail, query, go);
  renderChipsSelection(query.tags);
  renderDates(query);
  showFacets(query);
  search();
}

// The camera, year and folder chips, counted for what the query's tags and filters leave.
async function showFacets(query) {
  const request = beginFacets();
  try {
    const facets = await facetsOf(query, request.signal);
    if (request.current()) renderFacets(facets, query, setFilters);
  } catch { /* no chips; searching still works */ }
}

// The same query with other filters (a chip, the date range): a new history entry.
function setFilters(filters) {
  go({...state.query, filters}, state.trail);
}

async function search(offset = 0) {
  const {query} = state;
  const request = beginSearch();
  // "Load more" from the keyboard: carry on from the first new result (read before the button is disabled).
  const focusFirst = offset > 0 && document.activeElement === el.more;
  if (offset === 0) Object.assign(state, {results: [], total: 0});

  if (query.key && !has(query.key)) {
    clearResults();
    if (state.snapshot) {
      showResults(state.snapshot.results, query);
      setStatus("These are the earlier results for your picture. The picture itself is not kept after the " +
                "page reloads: drop it again to search more.");
    } else {
      setStatus("This search was made with an uploaded picture, and pictures are not kept in links. " +
                "Drop or paste the picture again to search.");
    }
    return;
  }

  if (offset === 0) clearResults();
  el.more.disabled = true;
  // This search's answer replaces only its own "Searching…" line, never a message said since (a dropped file
  // that isn't a picture, say).
  const ours = setStatus(query.kind === "image" ? "Looking at your picture…" : "Searching…", "loading");
  if (query.kind === "similar" && !query.name) nameSimilar(query);

  let body;
  try {
    body = await searchPage(query, offset, request.signal);
  } catch (err) {
    if (!request.current()) return;   // aborted or overtaken by a newer search
    el.more.disabled = false;
    if (ours()) setStatus(err.message, "error", () => search(offset));
    return;
  }
  if (!request.current()) return;
  state.total = body.total;
  showResults(body.results, query, focusFirst);
  state.results = state.results.concat(body.results);
  summarise(query, body.took_ms, body.results.length < PAGE, ours());
  if (query.key) keepSnapshot();
}

function showResults(results, query, focusFirst = false) {
  renderResults(results, query, {open: moreLike, mark: toggleMark, focusFirst});
}

// A bookmarked "more like this" link only has the id: ask for the file name to show as the query.
async function nameSimilar(query) {
  try {
    const doc = await api(`/api/images/${encodeURIComponent(query.id)}`);
    if (state.query !== query) return;
    nameQuery(doc.filename);
    renderQuery(state.query);
  } catch { /* the search itself reports a missing picture */ }
}

// last: the page just shown was the last one; say: the status line is still this search's to fill.
function summarise(query, tookMs, last, say) {
  // Pictures shown, counting the near copies folded into the results (total counts every matching picture).
  const count = state.results.reduce((n, hit) => n + 1 + (hit.copies ? hit.copies.length : 0), 0);
  const folded = count > state.results.length;
  const {total} = state;
  el.more.hidden = count >= total || count === 0 || last;
  el.more.disabled = false;
  el.more.textContent = `Load more (${(total - count).toLocaleString()} left)`;
  if (!say) return;
  if (query.kind === "none") {
    browsed(count, total, query);
    return;
  }
  if (count === 0) {
    const withTags = query.tags.length ? ` with the tag${query.tags.length > 1 ? "s" : ""} ` +
      query.tags.join(" and ") : "";
    const tip = withTags ? " Try removing a tag filter." : query.kind === "text" ? " Try other or fewer words." : "";
    const what = query.kind === "text" && query.q ? `for “${query.q}”` : query.kind === "text" ? "" : "like this one";
    setStatus(`No pictures found ${what}${withTags}.${tip}`.replace(/\s+/g, " "), "empty");
    return;
  }
  const took = tookMs < 1000 ? `${Math.max(1, Math.round(tookMs))} ms` : `${(tookMs / 1000).toFixed(1)} s`;
  setStatus(`Showing ${count.toLocaleString()} of ${total.toLocaleString()} in ${took}. ` +
            (folded ? "Near copies of a picture are folded into one card. " : "") +
            `${touch ? "Tap" : "Click"} a picture to find more like it, or mark several with + and − and refine.`);
}

// What the collection on screen is: how many, and what a person can do with it.
function browsed(count, total, query) {
  const narrowed = query.tags.length || hasFilters(query);
  if (count === 0) {
    setStatus(narrowed ? "No pictures match these filters. Try removing one."
      : "The collection is empty: index some pictures first (see the README), then search here.", "empty");
    return;
  }
  const how = touch ? "Choose a picture, type a word" : `Drop a picture, paste one (${pasteKey}), type a word`;
  setStatus(`Showing ${count.toLocaleString()} of ${total.toLocaleString()} ${narrowed ? "matching " : ""}` +
            `pictures to search, newest first. ${how}, or ${touch ? "tap" : "click"} one to find more like it.`);
}

// ---- starting searches --------------------------------------------------------------------------------

function moreLike(hit) {
  go({kind: "similar", id: hit.id, name: hit.filename, tags: state.query.tags, filters: state.query.filters},
     [...state.trail, state.query]);
}

function toggleTag(tag) {
  const {tags} = state.query;
  go({...state.query, tags: tags.includes(tag) ? tags.filter((t) => t !== tag) : [...tags, tag]}, state.trail);
}

async function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    setStatus(`“${file.name}” isn't a picture. Drop a ${IMAGE_TYPES} image.`, "error");
    return;
  }
  const key = keep(file);
  go({kind: "image", key, name: file.name || "pasted picture", thumb: await tinyPreview(file),
      tags: state.query.tags, filters: state.query.filters}, []);
}

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = el.keyword.value.trim();
  if (!q && state.query.kind !== "text") {
    setStatus("Type a word to search for: a file name or a tag.", "empty");
    el.keyword.focus();
    return;
  }
  go({kind: "text", q, tags: state.query.tags, filters: state.query.filters}, []);
});
el.more.addEventListener("click", () => search(state.results.length));
el.dates.addEventListener("submit", (event) => {
  event.preventDefault();
  setFilters({...(state.query.filters || noFilters()), taken_from: el.takenFrom.value, taken_to: el.takenTo.value});
});
// The collection loads more as it is scrolled to its end (searches keep their "Load more" button).
new IntersectionObserver((seen) => {
  if (seen.some((entry) => entry.isIntersecting) && state.query.kind === "none" && !el.more.hidden &&
      !el.more.disabled) search(state.results.length);
}, {rootMargin: "400px"}).observe(el.more);
el.preview.addEventListener("error", () => { el.preview.hidden = true; el.drop.classList.remove("has-preview"); });

// ---- marks: "more like this", "not like this", then refine --------------------------------------------

function renderMarks() {
  renderCardMarks();
  renderMarksBar();
}

function toggleMark(id, kind) {
  setMarks(toggledMarks(id, kind));
  renderMarks();
}

el.refine.addEventListener("click", () => go(refineQuery(), [...state.trail, state.query]));
el.clearMarks.addEventListener("click", () => { setMarks(noMarks()); renderMarks(); });

// ---- region search ------------------------------------------------------------------------------------

function wholeQuery() {
  const {crop, ...whole} = state.query;
  return whole;
}

initCropper((crop) => go({...wholeQuery(), crop}, [...state.trail, state.query]));
el.cropOpen.addEventListener("click", () => {
  if (!el.cropper.hidden) return closeCropper();
  const {query} = state;
  return openCropper(query.kind === "similar" ? fileUrl(query.id) : blobOf(query.key));
});
el.cropWhole.addEventListener("click", () => go(wholeQuery(), [...state.trail, state.query]));

// ---- start --------------------------------------------------------------------------------------------

initPictureInput(useFile);
initDuplicates(go);
followWidth();
window.addEventListener("popstate", (event) => {
  restore(event.state);
  show();
});
start();
show();
api("/api/tags").then(({tags}) => renderChips(tags, toggleTag), () => { /* no chips; searching still works */ });
