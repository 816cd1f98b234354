// The page's elements (index.html, by id) and small helpers to build new ones.

const $ = (id) => document.getElementById(id);

export const el = {
  drop: $("dropzone"), file: $("file-input"), preview: $("query-preview"), dropTitle: $("drop-title"),
  dropHint: $("drop-hint"), form: $("keyword-form"), keyword: $("keyword"), tagsBox: $("tags-box"),
  chips: $("tag-chips"), trail: $("trail"), trailList: $("trail-list"), heading: $("results-heading"),
  status: $("status"), grid: $("grid"), more: $("more"), marksBar: $("marks"), marksText: $("marks-text"),
  refine: $("refine"), clearMarks: $("clear-marks"), cropOpen: $("crop-open"), cropWhole: $("crop-whole"),
  cropper: $("cropper"), cropStage: $("crop-stage"), cropImage: $("crop-image"), cropBox: $("crop-box"),
  cropCancel: $("crop-cancel"), facets: $("facets"), dates: $("dates"), takenFrom: $("taken-from"),
  takenTo: $("taken-to"),
  labelsBox: $("labels-box"), labelsList: $("labels-list"), labelsNote: $("labels-note"),
};

export const pasteKey = /Mac|iPhone|iPad/.test(navigator.platform) ? "⌘V" : "Ctrl+V";
// On touch screens there is nothing to drag from and no paste key: the page says "tap" instead.
export const touch = window.matchMedia("(pointer: coarse)").matches;

// A click that should stay on the page (a modified or middle click opens the link's URL as usual).
export function plainClick(event) {
  return event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
}

export function span(className, text) {
  const s = document.createElement("span");
  if (className) s.className = className;
  s.textContent = text;
  return s;
}

export function li(child) {
  const item = document.createElement("li");
  item.append(child);
  return item;
}

export function img(src, className) {
  const image = document.createElement("img");
  image.src = src;
  image.alt = "";
  if (className) image.className = className;
  return image;
}
