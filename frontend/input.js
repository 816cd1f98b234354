// A picture to search with: dropped anywhere on the page, chosen with the file picker (a click, or Enter or
// Space on the drop zone), or pasted (Ctrl+V / ⌘V).

import {el} from "./dom.js";

// onFile(file): a file arrived (not yet checked to be a picture).
export function initPictureInput(onFile) {
  el.drop.addEventListener("click", () => el.file.click());
  el.file.addEventListener("change", () => {
    onFile(el.file.files[0]);
    el.file.value = "";  // choosing the same file again still fires "change"
  });

  // Drops are taken anywhere on the page (a miss would make the browser open the file instead).
  let depth = 0;   // dragenter minus dragleave: the drag is over the page while above 0
  const carriesFiles = (event) => event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    depth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (carriesFiles(event)) { event.preventDefault(); event.dataTransfer.dropEffect = "copy"; }
  });
  document.addEventListener("drop", (event) => {
    depth = 0;
    document.body.classList.remove("dragging");
    if (!carriesFiles(event)) return;
    event.preventDefault();
    onFile(event.dataTransfer.files[0]);
  });

  document.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (!files.length) return;  // pasting text into the keyword box works as usual
    event.preventDefault();
    onFile(files.find((f) => f.type.startsWith("image/")) || files[0]);
  });
}
