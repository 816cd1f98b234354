// What the page says about the query: the status line, the query picture and its title, the trail of
// earlier queries, the tag chips and the marks bar.

import {thumbUrl} from "./api.js";
import {el, img, li, pasteKey, plainClick, span, touch} from "./dom.js";
import {MAX_MARKED, hasFilters, noFilters, refineQuery, state, urlOf} from "./state.js";
import {blobOf, has, showIn} from "./uploads.js";

// ---- the status line ----------------------------------------------------------------------------------

let said = 0;   // how many things the status line has said: a slow answer must not overwrite a newer one

// kind: "" (plain), "loading", "empty" or "error"; retry adds a "Try again" button; line: another status line
// (the Duplicates view's). Returns a test of whether the line still says this.
export function setStatus(text, kind = "", retry = null, line = el.status) {
  const mine = ++said;
  line.className = `status ${kind}`;
  line.setAttribute("role", kind === "error" ? "alert" : "status");
  line.replaceChildren(span("", text));
  if (retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Try again";
    button.addEventListener("click", retry);
    line.append(button);
  }
  return () => said === mine;
}

// ---- the query ----------------------------------------------------------------------------------------

export function describe(query) {
  const tags = (query.tags.length ? ` in ${query.tags.join(" + ")}` : "") + filtersText(query);
  if (query.kind === "text") return (query.q ? `“${query.q}”` : "Tagged") + tags;
  const part = query.crop ? "part of " : "";
  if (query.kind === "similar") return `Like ${part}${query.name || "a picture"}${tags}`;
  if (query.kind === "image") return `${query.crop ? "Part of your" : "Your"} picture${query.name ? ` (${query.name})` : ""}${tags}`;
  if (query.kind === "refine") {
    const liked = query.pos.length + (query.key ? 1 : 0);
    const less = query.neg.length ? `, less like ${query.neg.length}` : "";
    return `More like ${liked} picture${liked === 1 ? "" : "s"}${less}${tags}`;
  }
  return query.tags.length || hasFilters(query) ? `Pictures${tags}` : "All pictures";
}

// The filters in words: " from Canon EOS 5D, taken 2020-01-01 to 2020-12-31, in trips".
function filtersText(query) {
  const f = query.filters || noFilters();
  const parts = [];
  if (f.camera.length) parts.push(`from ${f.camera.join(" or ")}`);
  if (f.taken_from || f.taken_to) parts.push(`taken ${f.taken_from || "…"} to ${f.taken_to || "…"}`);
  if (f.folder.length) parts.push(`in ${f.folder.map((folder) => folder || "/").join(" or ")}`);
  if (f.type.length) parts.push(`${f.type.join(" or ")} files`);
  return parts.length ? `, ${parts.join(", ")}` : "";
}

// The little picture standing for a query without its upload in memory (a trail step, a reloaded page).
function thumbOf(query) {
  if (query.key) return query.thumb || "";
  if (query.kind === "similar") return thumbUrl(query.id);
  if (query.kind === "refine" && query.pos.length) return thumbUrl(query.pos[0]);
  return "";
}

export function renderQuery(query) {
  el.keyword.value = query.kind === "text" ? query.q : "";
  const upload = query.key && has(query.key) ? blobOf(query.key) : null;
  const src = upload || thumbOf(query);
  el.preview.hidden = !src;
  showIn(el.preview, src);
  el.preview.alt = query.kind === "none" || query.kind === "text" ? "" : "The picture you are searching with";
  el.drop.classList.toggle("has-preview", Boolean(src));
  const part = query.crop ? "part of " : "";
  // A region can be searched in a picture of the collection or an uploaded one still in memory.
  el.cropOpen.hidden = !(query.kind === "similar" || (query.kind === "image" && upload));
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

// The trail: each earlier query a link (`go(step, trailBefore)` on a plain click), then the current one.
export function renderTrail(trail, query, go) {
  el.trailList.replaceChildren();
  el.trail.hidden = trail.length === 0;
  trail.forEach((step, i) => {
    const link = document.createElement("a");
    link.href = urlOf(step);
    link.addEventListener("click", (event) => {
      if (plainClick(event)) { event.preventDefault(); go(step, trail.slice(0, i)); }
    });
    const src = thumbOf(step);
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

// ---- tag chips ----------------------------------------------------------------------------------------

// tags: the API's [{tag, count}], most used first; a click on a chip calls toggle(tag).
export function renderChips(tags, toggle) {
  el.tagsBox.hidden = tags.length === 0;
  el.chips.replaceChildren(...tags.map(({tag, count}) => {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip";
    chip.dataset.tag = tag;
    chip.append(span("", tag), span("count", count.toLocaleString()));
    chip.setAttribute("aria-label", `${tag} (${count} pictures)`);
    chip.addEventListener("click", () => toggle(tag));
    return li(chip);
  }));
  renderChipsSelection(state.query.tags);
}

export function renderChipsSelection(tags) {
  for (const chip of el.chips.querySelectorAll(".chip")) {
    chip.setAttribute("aria-pressed", String(tags.includes(chip.dataset.tag)));
  }
}

// ---- facets: cameras, years, folders; the date range --------------------------------------------------

const FACETS = [["camera", "Camera"], ["year", "Year"], ["folder", "Folder"]];

// facets: the API's {camera, year, folder: [{value, count}]} for the query's filters; a click on a chip calls
// setFilters(new filters). Chosen values stay shown (pressed) even when nothing else is left beside them.
export function renderFacets(facets, query, setFilters) {
  const f = query.filters || noFilters();
  const yearOf = (value) => ({taken_from: `${value}-01-01`, taken_to: `${value}-12-31`});
  const chosen = {
    camera: (value) => f.camera.some((c) => c.toLowerCase() === value.toLowerCase()),
    folder: (value) => f.folder.includes(value),
    year: (value) => f.taken_from === yearOf(value).taken_from && f.taken_to === yearOf(value).taken_to,
  };
  const toggled = {
    camera: (value, on) => ({...f, camera: on ? f.camera.filter((c) => c.toLowerCase() !== value.toLowerCase())
                                              : [...f.camera, value]}),
    folder: (value, on) => ({...f, folder: on ? f.folder.filter((d) => d !== value) : [...f.folder, value]}),
    year: (value, on) => ({...f, ...(on ? {taken_from: "", taken_to: ""} : yearOf(value))}),
  };
  const groups = [];
  for (const [name, label] of FACETS) {
    const values = [...facets[name]];
    for (const value of {camera: f.camera, folder: f.folder, year: []}[name]) {
      if (!values.some((v) => v.value.toLowerCase() === value.toLowerCase())) values.push({value, count: 0});
    }
    if (name === "year") values.sort((a, b) => b.value.localeCompare(a.value));   // newest year first
    if (!values.length) continue;
    const heading = span("tags-label", label);
    heading.id = `facet-${name}`;
    const list = document.createElement("ul");
    list.className = "chips";
    list.setAttribute("aria-labelledby", heading.id);
    list.append(...values.map(({value, count}) => {
      const on = chosen[name](value);
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.dataset.facet = name;
      chip.dataset.value = value;
      chip.append(span("", value || "(top folder)"), span("count", count.toLocaleString()));
      chip.setAttribute("aria-pressed", String(on));
      chip.setAttribute("aria-label", `${label} ${value || "top folder"} (${count} pictures)`);
      chip.addEventListener("click", () => setFilters(toggled[name](value, on)));
      return li(chip);
    }));
    const group = document.createElement("div");
    group.className = "tags facet";
    group.append(heading, list);
    groups.push(group);
  }
  el.facets.replaceChildren(...groups);
}

// The date range's fields show the query's dates. Drawn with the query, not when its facets arrive: by then
// a person may be typing new dates.
export function renderDates(query) {
  const f = query.filters || noFilters();
  el.takenFrom.value = f.taken_from;
  el.takenTo.value = f.taken_to;
}

// ---- the marks bar ------------------------------------------------------------------------------------

export function renderMarksBar() {
  const {pos, neg} = state.marks;
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
