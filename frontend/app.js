// lookalike web page: talks only to the JSON API (/api/...). No framework, no build step: ES modules.
// This one starts the page and runs searches; state.js holds what is asked, the other modules draw it.

import {api, fileUrl, oneAtATime, searchPage} from "./api.js";
import {closeCropper, initCropper, openCropper} from "./crop.js";
import {el, pasteKey, touch} from "./dom.js";
import {hideDuplicates, initDuplicates, showDuplicates} from "./duplicates.js";
import {clearResults, followWidth, renderCardMarks, renderResults} from "./grid.js";
import {initPictureInput} from "./input.js";
import {showLabels} from "./labels.js";
import {IMAGE_TYPES} from "./messages.js";
import {PAGE, keepSnapshot, nameQuery, navigate, noMarks, refineQuery, restore, setMarks, start, state,
        toggledMarks} from "./state.js";
import {blobOf, has, keep, tinyPreview} from "./uploads.js";
import {describe, renderChips, renderChipsSelection, renderMarksBar, renderQuery, renderTrail,
        setStatus} from "./view.js";

const beginSearch = oneAtATime();

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
  document.title = query.kind === "none" ? "lookalike: image search" : `${describe(query)} · lookalike`;
  renderQuery(query);
  showLabels(query.kind === "similar" ? query.id : null);
  renderTrail(state.trail, query, go);
  renderChipsSelection(query.tags);
  search();
}

async function search(offset = 0) {
  const {query} = state;
  const request = beginSearch();
  // "Load more" from the keyboard: carry on from the first new result (read before the button is disabled).
  const focusFirst = offset > 0 && document.activeElement === el.more;
  if (offset === 0) Object.assign(state, {results: [], total: 0});

  if (query.kind === "none") {
    clearResults();
    intro();
    return;
  }
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
  setStatus(query.kind === "image" ? "Looking at your picture…" : "Searching…", "loading");
  if (query.kind === "similar" && !query.name) nameSimilar(query);

  let body;
  try {
    body = await searchPage(query, offset, request.signal);
  } catch (err) {
    if (!request.current()) return;   // aborted or overtaken by a newer search
    el.more.disabled = false;
    setStatus(err.message, "error", () => search(offset));
    return;
  }
  if (!request.current()) return;
  state.total = body.total;
  showResults(body.results, query, focusFirst);
  state.results = state.results.concat(body.results);
  summarise(query, body.took_ms, body.results.length < PAGE);
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

// last: the page just shown was the last one.
function summarise(query, tookMs, last = false) {
  // Pictures shown, counting the near copies folded into the results (total counts every matching picture).
  const count = state.results.reduce((n, hit) => n + 1 + (hit.copies ? hit.copies.length : 0), 0);
  const folded = count > state.results.length;
  const {total} = state;
  el.more.hidden = count >= total || count === 0 || last;
  el.more.disabled = false;
  el.more.textContent = `Load more (${(total - count).toLocaleString()} left)`;
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

async function intro() {
  const how = touch ? "Choose a picture or type a word" : `Drop a picture, paste one (${pasteKey}), or type a word`;
  const stillSaid = setStatus(`${how} to start.`);
  try {
    const {count} = await api("/api/stats");
    if (!stillSaid()) return;  // something else was said meanwhile
    setStatus(count === 0
      ? "The collection is empty: index some pictures first (see the README), then search here."
      : `${count.toLocaleString()} pictures to search. ${how}.`);
  } catch { /* the intro text above is enough */ }
}

// ---- starting searches --------------------------------------------------------------------------------

function moreLike(hit) {
  go({kind: "similar", id: hit.id, name: hit.filename, tags: state.query.tags}, [...state.trail, state.query]);
}

function toggleTag(tag) {
  const query = state.query.kind === "none" ? {kind: "text", q: ""} : state.query;
  const {tags} = state.query;
  go({...query, tags: tags.includes(tag) ? tags.filter((t) => t !== tag) : [...tags, tag]}, state.trail);
}

async function useFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    setStatus(`“${file.name}” isn't a picture. Drop a ${IMAGE_TYPES} image.`, "error");
    return;
  }
  const key = keep(file);
  go({kind: "image", key, name: file.name || "pasted picture", thumb: await tinyPreview(file),
      tags: state.query.tags}, []);
}

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = el.keyword.value.trim();
  if (!q && !state.query.tags.length) {
    setStatus("Type a word to search for: a file name or a tag.", "empty");
    el.keyword.focus();
    return;
  }
  go({kind: "text", q, tags: state.query.tags}, []);
});
el.more.addEventListener("click", () => search(state.results.length));
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
