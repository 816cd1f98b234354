// Searching by a region: the query picture shown large, and a box dragged over it (mouse, pen or finger).

import {el} from "./dom.js";
import {showIn} from "./uploads.js";

// picture: the Blob of an uploaded picture, or the URL of an indexed one's file.
export function openCropper(picture) {
  showIn(el.cropImage, picture);
  el.cropBox.hidden = true;
  el.cropper.hidden = false;
  el.cropOpen.setAttribute("aria-expanded", "true");
}

export function closeCropper() {
  el.cropper.hidden = true;
  el.cropOpen.setAttribute("aria-expanded", "false");
  showIn(el.cropImage, "");   // nothing kept alive for a picture no longer shown
}

// onRegion([x, y, w, h]): a box was dragged (fractions of the picture's width and height).
export function initCropper(onRegion) {
  // Shown as large as fits (at most 480 x 360 px), at the picture's own aspect, so the box maps onto it.
  el.cropImage.addEventListener("load", () => {
    const {naturalWidth: w, naturalHeight: h} = el.cropImage;
    const room = el.cropper.parentElement.clientWidth;
    const scale = Math.min(480 / w, 360 / h, room / w);
    Object.assign(el.cropImage.style, {width: `${Math.round(w * scale)}px`, height: `${Math.round(h * scale)}px`});
  });

  let start = null;   // where the drag began, while one goes on
  const clamp01 = (v) => Math.min(1, Math.max(0, v));
  const relative = (event) => {
    const box = el.cropImage.getBoundingClientRect();
    return [clamp01((event.clientX - box.left) / box.width), clamp01((event.clientY - box.top) / box.height)];
  };
  const dragRect = (event) => {
    const [x, y] = relative(event);
    const [x0, y0] = start;
    return [Math.min(x, x0), Math.min(y, y0), Math.abs(x - x0), Math.abs(y - y0)];
  };
  const drawBox = ([x, y, w, h]) => {
    Object.assign(el.cropBox.style, {left: `${x * 100}%`, top: `${y * 100}%`, width: `${w * 100}%`,
                                     height: `${h * 100}%`});
    el.cropBox.hidden = false;
  };

  el.cropStage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    start = relative(event);
    el.cropStage.setPointerCapture(event.pointerId);
    drawBox([...start, 0, 0]);
  });
  el.cropStage.addEventListener("pointermove", (event) => {
    if (start) drawBox(dragRect(event));
  });
  el.cropStage.addEventListener("pointerup", (event) => {
    if (!start) return;
    const [x, y, w, h] = dragRect(event);
    start = null;
    if (w < 0.03 || h < 0.03) {  // a click, not a box
      el.cropBox.hidden = true;
      return;
    }
    onRegion([x, y, Math.min(w, 1 - x), Math.min(h, 1 - y)]);
  });
  el.cropStage.addEventListener("pointercancel", () => { start = null; el.cropBox.hidden = true; });
  el.cropCancel.addEventListener("click", closeCropper);
}
