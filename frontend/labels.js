// Content labels of the picture being searched with (an indexed one): what the classifier saw, each offered
// as a tag. Adding one needs the server's write key, asked for once and kept for this tab (writekey.js).

import {api} from "./api.js";
import {el, li, span} from "./dom.js";
import {forgetWriteKey, keepWriteKey, withKey, writeKey} from "./writekey.js";

let shown = null;   // the id whose labels are on screen (a late answer for another picture is dropped)

const percent = (confidence) => `${Math.round(confidence * 100)}%`;

// Show the labels of indexed picture `id`, or hide the box (id null).
export async function showLabels(id) {
  shown = id;
  el.labelsBox.hidden = true;
  if (!id) return;
  let doc;
  try {
    doc = await api(`/api/images/${encodeURIComponent(id)}`);
  } catch { return; }   // the search itself reports a missing picture
  if (shown === id) render(doc);
}

function render(doc) {
  const labels = doc.labels || [];
  el.labelsBox.hidden = labels.length === 0;
  el.labelsNote.textContent = "";
  el.labelsList.replaceChildren(...labels.map(({label, confidence}) => {
    const item = li(span("label-name", label));
    item.append(span("label-confidence", percent(confidence)));
    const tag = label.toLowerCase();
    if (doc.tags.includes(tag)) {
      item.append(span("label-tagged", "tag"));
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link-button add-tag";
      button.textContent = "Add as tag";
      button.setAttribute("aria-label", `Add ${label} as a tag of ${doc.filename}`);
      button.addEventListener("click", () => addTag(doc, tag));
      item.append(button);
    }
    return item;
  }));
}

async function addTag(doc, tag) {
  let key = writeKey();
  if (!key) {
    key = window.prompt("Adding a tag needs the server's API key (LOOKALIKE_API_KEY):") || "";
    if (!key) return;
  }
  try {
    const updated = await api(`/api/images/${encodeURIComponent(doc.id)}/tags`, {
      method: "PUT", body: JSON.stringify({tags: [...doc.tags, tag]}),
      headers: {...withKey(key), "Content-Type": "application/json"}});
    keepWriteKey(key);
    if (shown === doc.id) render(updated);
    el.labelsNote.textContent = `Tagged “${tag}”.`;
  } catch (err) {
    if (err.code === "unauthorized") forgetWriteKey();
    el.labelsNote.textContent = err.message;
  }
}
