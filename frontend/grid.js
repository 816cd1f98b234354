// The results: one card per result (the API's Result objects) with its "+" and "−" marks, laid out in
// justified rows.

import {el, img, li, plainClick, span} from "./dom.js";
import {state, urlOf} from "./state.js";

// Adds cards for `results` of `query`. open(hit): a plain click or Enter on a card; mark(id, kind): a click
// on its "+" (kind "pos") or "−" ("neg"). focusFirst: focus the first new card (paging from the keyboard).
// A result with near copies folded into it (its `copies`) has a "+N copies" button that shows them in place.
export function renderResults(results, query, {open, mark, focusFirst = false}) {
  const fragment = document.createDocumentFragment();
  for (const hit of results) fragment.append(resultCard(hit, query, {open, mark}));
  const first = fragment.firstElementChild;
  el.grid.append(fragment);
  layout();
  renderCardMarks();
  if (focusFirst && first) first.querySelector("a").focus();
}

function resultCard(hit, query, handlers) {
  const link = document.createElement("a");
  link.className = "hit";
  link.href = urlOf({kind: "similar", id: hit.id, tags: query.tags, filters: query.filters});
  link.title = `Find more pictures like ${hit.filename}`;
  link.addEventListener("click", (event) => {
    if (plainClick(event)) { event.preventDefault(); handlers.open(hit); }
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
  if (query.kind === "none") meta.append(span("score", hit.taken ? hit.taken.slice(0, 10) : "date unknown"));
  else if (query.kind !== "text") meta.append(span("score", formatScore(hit.score)));
  // a keyword result found by what is in the picture says so (no file name or tag had the words)
  if (hit.matched === "label") meta.append(span("card-label", `${hit.label} ${Math.round(hit.confidence * 100)}%`));
  meta.append(span("card-tags", hit.tags.length ? hit.tags.join(" · ") : "\u00a0"));
  link.append(frame, meta);
  const item = li(link);
  item.className = "card";
  item.dataset.id = hit.id;
  // Upright width / height, for the justified rows (kept within 1:4 and 4:1: beyond, the picture is cut).
  item.ratio = Math.min(4, Math.max(0.25, hit.width / hit.height));
  item.append(markButtons(hit, handlers.mark));
  if (hit.copies && hit.copies.length) item.append(copiesButton(hit, item, query, handlers));
  return item;
}

// "+N copies": the near copies folded into `hit`, shown as cards right after its own, or hidden again.
function copiesButton(hit, item, query, handlers) {
  const count = hit.copies.length;
  const copies = `${count} near ${count === 1 ? "copy" : "copies"}`;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copies";
  button.setAttribute("aria-expanded", "false");
  const label = (shown) => {
    button.textContent = shown ? "Hide" : `+${count} ${count === 1 ? "copy" : "copies"}`;   // short: narrow cards
    button.setAttribute("aria-label", `${shown ? "Hide the" : "Show the"} ${copies} of ${hit.filename}`);
  };
  label(false);
  button.addEventListener("click", () => {
    const shown = button.getAttribute("aria-expanded") !== "true";
    button.setAttribute("aria-expanded", String(shown));
    label(shown);
    if (shown) {
      item.after(...hit.copies.map((copy) => {
        const copyCard = resultCard(copy, query, handlers);
        copyCard.classList.add("copy");
        copyCard.dataset.copyOf = hit.id;
        return copyCard;
      }));
    } else {
      for (const copyCard of el.grid.querySelectorAll(".card.copy")) {
        if (copyCard.dataset.copyOf === hit.id) copyCard.remove();
      }
    }
    layout();
    renderCardMarks();
  });
  return button;
}

export function clearResults() {
  el.grid.replaceChildren();
  el.more.hidden = true;
}

// "More like this" and "not like this" toggles on a result card.
function markButtons(hit, mark) {
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
    button.addEventListener("click", () => mark(hit.id, kind));
    group.append(button);
  }
  return group;
}

// Each card outlined and its toggles pressed as the current marks say.
export function renderCardMarks() {
  const {pos, neg} = state.marks;
  for (const card of el.grid.querySelectorAll(".card")) {
    const kind = pos.includes(card.dataset.id) ? "pos" : neg.includes(card.dataset.id) ? "neg" : "";
    card.classList.toggle("marked-pos", kind === "pos");
    card.classList.toggle("marked-neg", kind === "neg");
    for (const button of card.querySelectorAll(".mark")) {
      button.setAttribute("aria-pressed", String(button.dataset.kind === kind));
    }
  }
}

// Visual scores are cosine similarities, shown as a percentage. Keyword scores (BM25) are not shown: they
// have no scale a person can read, and are near 0 for a word most pictures share; the order says it all.
function formatScore(score) {
  // Rounded down, so only the same picture (cosine 1, give or take float error) says 100%.
  return `${Math.floor(Math.max(0, Math.min(1, score + 0.0005)) * 100)}% similar`;
}

// ---- justified rows -----------------------------------------------------------------------------------

// Rows of pictures as photo sites lay them out: every picture whole, at its own aspect, each row as high
// as it needs to be to fill the width exactly (the last row at the target height, not stretched). No card
// is narrower than minCard: a tall picture in a low row gets a card that wide, the picture whole in its
// middle, so that its + and − buttons, its name and its score always fit.
const minCard = (width) => (width < 560 ? 112 : 128);   // px: two buttons and "100% similar" at each text size

function layout() {
  const width = el.grid.clientWidth;
  if (!width) return;
  const gap = parseFloat(getComputedStyle(el.grid).columnGap) || 0;
  const target = width < 560 ? 120 : 200;   // px: about three pictures a row on a phone, five or six wide
  const least = minCard(width);
  const cards = [...el.grid.children];
  const fits = (n) => n * least + gap * (n - 1) <= width;
  let row = [];
  const place = (items, height, fill) => {
    let used = 0;
    items.forEach((card, i) => {
      let w = Math.max(least, Math.floor(card.ratio * height));
      if (fill && i === items.length - 1) w = width - gap * (items.length - 1) - used;  // the rounding left over
      used += w;
      card.style.width = `${w}px`;
      card.style.setProperty("--frame-height", `${Math.round(height)}px`);   // places its "+N copies"
      card.classList.toggle("narrow", card.ratio * height < w - 1);   // the picture does not fill its card
      card.querySelector(".frame").style.height = `${Math.round(height)}px`;
    });
  };
  for (const card of cards) {
    if (row.length && !fits(row.length + 1)) {   // no room for another card: this row is full as it is
      place(row, rowHeight(row, width, gap, least), true);
      row = [];
    }
    row.push(card);
    const height = rowHeight(row, width, gap, least);
    if (height <= target) {
      place(row, height, true);
      row = [];
    }
  }
  if (row.length) place(row, Math.min(target, rowHeight(row, width, gap, least)), false);
}

// The height at which `row` fills `width` exactly, its cards at least `least` wide: those that would be
// narrower are held at `least` and the others share what is left.
function rowHeight(row, width, gap, least) {
  let held = new Set();
  for (;;) {
    const free = row.filter((card) => !held.has(card));
    const room = width - gap * (row.length - 1) - held.size * least;
    const ratios = free.reduce((sum, card) => sum + card.ratio, 0);
    if (!free.length || ratios <= 0) return least / Math.max(...row.map((card) => card.ratio));
    const height = room / ratios;
    const more = free.filter((card) => card.ratio * height < least);
    if (!more.length) return height;
    held = new Set([...held, ...more]);
  }
}

// Laid out again when the page width changes, once per frame at most.
export function followWidth() {
  let frame = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(layout);
  }).observe(el.grid);
}
