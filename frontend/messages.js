// Sentences for the person at the page, chosen from the API's error code (backend/api/errors.py,
// backend/gunicorn_conf.py and the table "Errors" in docs/api.md list every one): several codes share a status
// (503 is the store, the model or a server still starting), and each calls for different words.

export const IMAGE_TYPES = "JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC or AVIF";

export const UNREACHABLE = "Can't reach the search service. Check that it is running and try again.";
const LATER = "Try again in a moment.";
const RELOAD = "The page sent a request the server did not accept. Reload the page and try again.";
const WRITES = "This server does not accept changes from the page (no API key is set on it).";

const BY_CODE = {
  // 400: the request. The page sends good ones; a hand-edited link (too many tags, a crop out of range) can not.
  bad_parameter: ({error}) => `That search didn't work: ${error.message}.`,
  missing_query: "Type a word to search for, or choose a tag.",
  missing_image: "The picture did not arrive with the search. Drop or choose it again.",
  missing_positive: "Mark at least one picture with + to refine.",
  bad_base64: "The picture did not arrive whole. Drop or choose it again.",
  bad_json: RELOAD,
  bad_request: RELOAD,
  // 401, 403: writes (removing duplicates from the index, adding a suggested tag), with the key the page asks for.
  unauthorized: "That API key was not accepted. Try again with the server's LOOKALIKE_API_KEY.",
  write_disabled: WRITES,
  // 404
  not_found: ({unknown_ids: unknown = []}) => (unknown.length > 1
    ? "Some of these pictures are no longer in the collection. Start a new search."
    : "That picture is no longer in the collection. Start a new search."),
  file_missing: "That picture's file is no longer on the server, so a part of it can't be searched. " +
                "Search the whole picture instead.",
  // 409
  descriptor_mismatch: "The collection was indexed with other model settings than the server now uses, so " +
                       "pictures cannot be compared. Whoever runs this service needs to index it again.",
  // 413, 415, 422: the picture
  too_large: "That picture is too large. Try a smaller file (a screenshot of it works too).",
  unsupported_image: `That file isn't a picture this search can read. Use a ${IMAGE_TYPES} image.`,
  corrupt_image: "That picture could not be read: the file seems damaged or incomplete. Try another one.",
  unsupported_media_type: RELOAD,
  // Answered by the HTTP layer (Werkzeug; gunicorn for 414, 417, 431 and its own 400, 403 and 501).
  forbidden: RELOAD,
  expectation_failed: RELOAD,
  method_not_allowed: RELOAD,
  not_acceptable: RELOAD,
  length_required: RELOAD,
  range_not_satisfiable: RELOAD,
  unprocessable: RELOAD,
  not_implemented: RELOAD,
  request_timeout: "The search took too long to reach the server. Check the connection and try again.",
  uri_too_long: "That search is too long to send. Use fewer words or tags.",
  headers_too_large: "The browser sent more than the server takes (too many cookies, perhaps). " +
                     "Clear this site's cookies and try again.",
  // 500, 503
  internal_error: `Something went wrong on the server. ${LATER}`,
  store_unavailable: `The picture collection can't be reached right now. ${LATER}`,
  store_error: "The picture collection refused the search. Whoever runs this service needs to check its " +
               "settings.",
  model_unavailable: "Searching by picture isn't available right now: the server could not load its model. " +
                     "Searching by words and tags still works.",
  not_ready: `The search service is still starting. ${LATER}`,
  unavailable: `The search service isn't ready yet. ${LATER}`,
};

// Words for an error answer of the API ({error: {code, message}, ...}) with this HTTP status.
export function explain(body, status) {
  const words = BY_CODE[body.error.code];
  if (typeof words === "function") return words(body);
  if (words) return words;
  // A code this page does not know yet (a newer server): the status class, and the server's own words.
  return status >= 500 ? `Something went wrong on the server. ${LATER}` : `That search didn't work: ${body.error.message}`;
}
