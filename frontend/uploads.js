// Pictures dropped, pasted or chosen, and the object URLs that show them.
//
// A picture cannot be put in a URL: its bytes are kept here, under a short key, for as long as the page
// lives, so back/forward can send them again. An object URL is made only while an <img> shows a picture
// and revoked as soon as that <img> shows something else or nothing.

const pictures = new Map();        // key -> {blob, base64?}
const shown = new WeakMap();       // <img> -> {blob, url} of the picture it shows

export function keep(blob) {
  const key = Math.random().toString(36).slice(2, 10);
  pictures.set(key, {blob});
  return key;
}

export const has = (key) => pictures.has(key);
export const blobOf = (key) => pictures.get(key).blob;

// The picture as a data URL, read once (a refine request sends it as image_base64).
export async function base64Of(key) {
  const picture = pictures.get(key);
  if (!picture.base64) {
    picture.base64 = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("That picture could not be read again. Drop it once more."));
      reader.readAsDataURL(picture.blob);
    });
  }
  return picture.base64;
}

// Show `source` in `image`: a Blob (through an object URL of its own), a URL, or "" for nothing.
// The object URL `image` held before is revoked.
export function showIn(image, source) {
  const before = shown.get(image);
  if (before && before.blob === source) return;   // already showing it
  shown.delete(image);
  if (source instanceof Blob) {
    const url = URL.createObjectURL(source);
    shown.set(image, {blob: source, url});
    image.src = url;
  } else if (source) {
    image.src = source;
  } else {
    image.removeAttribute("src");
  }
  if (before) URL.revokeObjectURL(before.url);
}

// A small data-URL copy of the picture for history.state and the trail (the Blob does not survive reloads).
export async function tinyPreview(blob) {
  try {
    const bitmap = await createImageBitmap(blob);
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
