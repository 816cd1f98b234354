"""The OpenAPI 3.1 document of the API, served at /api/openapi.json: the one description of every
request and response shape (docs/api.md explains it in prose; tests check the API against it)."""
from __future__ import annotations

from functools import cache

from backend.imaging import FORMAT_NAMES

from backend.feedback import MAX_MARKED
from backend.stores import BACKENDS

from backend.duplicates import LEVELS, LINK_FLOOR, NEAR, NEAR_MIN_SCORE
from backend.stores.base import SORTS

from .browse import MAX_FACET_VALUES
from .params import COLLAPSE as COLLAPSE_VALUES
from .params import (DEFAULT_LIMIT, MAX_EXPAND, MAX_LIMIT, MAX_OFFSET, MAX_QUERY_LENGTH, MAX_SIDE, MAX_VALUE_LENGTH,
                     MAX_VALUES)

VERSION = "1.0.0"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    out = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str, headers: dict | None = None) -> dict:
    return _json(_ref("Error"), description, headers)


ERRORS = {
    # Every operation refuses query parameters (and body fields) it does not take, so every one lists 400.
    "400": _error("A malformed request, or a bad or unknown parameter, form field or JSON key (the message "
                  "names it)."),
    "401": _error("The API key is missing or wrong.",
                  {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}),
    "403": _error("Writes are disabled: the server has no LOOKALIKE_API_KEY."),
    "404": _error("No image with this id (or no such route)."),
    "409": _error("The store holds vectors of another descriptor than this server's model."),
    "413": _error("Too many bytes, or too many pixels."),
    "415": _error(f"Not an image type we accept ({FORMAT_NAMES}), or a request body that is neither "
                  "multipart/form-data nor JSON."),
    "422": _error("An image that cannot be decoded."),
    "503": _error("The store is unavailable, or (searching by image, uploading) the model is not loaded."),
}


def _errors(*codes: str) -> dict:
    return {code: ERRORS[code] for code in codes}


ID = {"name": "id", "in": "path", "required": True, "description": "An image id (20 hexadecimal digits).",
      "schema": {"type": "string", "pattern": "^[0-9a-f]{20}$"}}
LIMIT = {"name": "limit", "in": "query", "description": "How many results (default 24, at most 100).",
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}
OFFSET = {"name": "offset", "in": "query", "description": "How many results to skip (paging).",
          "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}}
TAGS = {"name": "tags", "in": "query", "style": "form", "explode": True,
        "description": "Only images with every one of these tags (case-insensitive). Repeat the parameter or "
                       "separate tags with commas; at most 20 tags of at most 100 characters.",
        "schema": {"type": "array", "items": {"type": "string"}, "maxItems": 20}}
DAY: dict = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
STRINGS: dict = {"type": "array", "items": {"type": "string", "maxLength": MAX_VALUE_LENGTH}, "maxItems": MAX_VALUES}
SIDE: dict = {"type": "integer", "minimum": 0, "maximum": MAX_SIDE}
FILTER_TEXT: dict[str, tuple[dict, str]] = {
    "taken_from": (DAY, "Only pictures taken on this day (YYYY-MM-DD, the camera's own clock) or later; pictures "
                        "without an EXIF date taken are left out."),
    "taken_to": (DAY, "Only pictures taken on this day or earlier (inclusive)."),
    "camera": (STRINGS, "Only pictures from one of these cameras: a camera's name as results show it (\"Canon EOS "
                        "5D\") or its make (\"Canon\"), case-insensitive. Repeat the parameter for several."),
    "folder": (STRINGS, "Only pictures in one of these folders or anything under them (paths relative to the "
                        "folder that was indexed, '/'-separated; '' or '/' is every indexed folder). Repeatable."),
    "type": (STRINGS, "Only pictures of one of these file types: jpeg, png, gif, bmp, webp, tiff, heic, avif. "
                      "Repeatable."),
    "min_width": (SIDE, "Only pictures at least this wide (upright, in pixels)."),
    "min_height": (SIDE, "Only pictures at least this high (upright, in pixels)."),
}
FILTERS = [TAGS, *({"name": name, "in": "query", "description": text, "schema": schema,
                    **({"style": "form", "explode": True} if schema is STRINGS else {})}
                   for name, (schema, text) in FILTER_TEXT.items())]
# In a form every field is text; in JSON a repeatable filter may also be a list.
FORM_FILTERS = {name: {"type": "string", "description": text} if schema is STRINGS else {**schema, "description": text}
                for name, (schema, text) in FILTER_TEXT.items()}
JSON_FILTERS = {name: ({"anyOf": [{"type": "string", "maxLength": MAX_VALUE_LENGTH}, schema], "description": text}
                       if schema is STRINGS else {**schema, "description": text})
                for name, (schema, text) in FILTER_TEXT.items()}
MIN_SCORE = {"name": "min_score", "in": "query", "description": "Only results with at least this cosine similarity.",
             "schema": {"type": "number", "minimum": -1, "maximum": 1}}
CROP_TEXT = {"type": "string", "description": "A region of the query picture: x,y,w,h as fractions (0 to 1) of its "
                                          "upright width and height, w and h above 0, x + w and y + h at most 1, "
                                          "e.g. 0.25,0.1,0.5,0.5. The search is by that region alone."}
CROP = {"name": "crop", "in": "query", "description": CROP_TEXT["description"], "schema": CROP_TEXT}
CROP_FIELD = {"anyOf": [CROP_TEXT, {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1},
                                    "minItems": 4, "maxItems": 4}],
              "description": "The region x,y,w,h: one comma-separated string or an array of four numbers."}
EXPAND_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_EXPAND, "default": 0}
EXPAND = {"name": "expand", "in": "query",
          "description": "Average query expansion: the query vector plus its top `expand` results, renormalised, "
                         "searched again (0: off). Helps where each picture has many like it; see docs/api.md.",
          "schema": EXPAND_SCHEMA}
COLLAPSE_SCHEMA = {"enum": list(COLLAPSE_VALUES), "default": "none"}
COLLAPSE = {"name": "collapse", "in": "query",
            "description": "near: fold the near duplicates of a result into it (its `copies`), so that a page is "
                           "never several copies of one picture; offset and limit then count folded results. "
                           "none: every result apart.",
            "schema": COLLAPSE_SCHEMA}
LEVEL = {"name": "level", "in": "query",
         "description": "exact: the same bytes; near: the same picture after edits (resized, recompressed, "
                        "cropped a little, brighter, watermarked, ...).",
         "schema": {"enum": list(LEVELS), "default": NEAR}}
DUPLICATE_SCORE = {"name": "min_score", "in": "query",
                   "description": f"near: how surely two pictures are one picture (their near score), from "
                                  f"{LINK_FLOOR} to 1; default {NEAR_MIN_SCORE}. Not with level=exact.",
                   "schema": {"type": "number", "minimum": LINK_FLOOR, "maximum": 1}}
TAGS_FIELD = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 20}],
              "description": "Tags, as a list or separated by commas; at most 20 of at most 100 characters."}
CACHE_HEADERS = {"ETag": {"schema": {"type": "string"}, "required": True},
                 "Cache-Control": {"schema": {"type": "string"}, "required": True}}

PHOTO = {
    "taken": {"type": ["string", "null"], "description": "When the picture was taken, from its EXIF "
              "DateTimeOriginal: local time YYYY-MM-DDTHH:MM:SS, followed by its UTC offset (+HH:MM) when the camera "
              "wrote one; null when the file has none (never the file's modification time)."},
    "camera": {"type": ["string", "null"], "description": "The camera's name: its model, led by its make unless "
                                                          "the model names it already."},
    "camera_make": {"type": ["string", "null"]}, "camera_model": {"type": ["string", "null"]},
    "type": {"type": ["string", "null"], "description": "The file type: jpeg, png, gif, bmp, webp, tiff, heic, avif."},
    "folder": {"type": ["string", "null"], "description": "The folder relative to the indexed folder ('' at its "
                                                          "top); null for an uploaded picture."},
}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "Result": {
        "type": "object",
        "required": ["id", "filename", "tags", "score", "width", "height", "image_url", "thumbnail_url"],
        "properties": {
            "id": {"type": "string"}, "filename": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "score": {"type": "number", "description": "Cosine similarity in [-1, 1] for image searches; "
                                                       "keyword relevance (higher is better) for text searches."},
            "width": {"type": "integer"}, "height": {"type": "integer"}, **PHOTO,
            "image_url": {"type": "string", "description": "Relative URL of the file."},
            "thumbnail_url": {"type": "string", "description": "Relative URL of a JPEG thumbnail."},
            "copies": {"type": "array", "items": {"$ref": "#/components/schemas/Result"},
                       "description": "collapse=near only: the near duplicates folded into this result, best first."},
            "matched": {"enum": ["text", "label"], "description": "Keyword searches: what the words matched, the "
                                                                "file name or tags (`text`) or a content label"},
            "label": {"type": "string", "description": "`matched: label`: the content label the words named"},
            "confidence": {"type": "number", "description": "`matched: label`: the classifier's confidence in it"},
        },
    },
    "DuplicateMember": {"allOf": [_ref("Result"), {
        "type": "object", "required": ["keeper", "path", "bytes", "modified_at", "content_hash"],
        "properties": {"keeper": {"type": "boolean", "description": "The suggested copy to keep: most pixels, then "
                                                                    "the largest file, then the oldest."},
                       "path": {"type": "string", "description": "Where the file is on the server."},
                       "bytes": {"type": "integer"}, "modified_at": {"type": "number"},
                       "content_hash": {"type": "string"}}}],
        "description": "score: cosine similarity with the keeper (1 for identical bytes)."},
    "DuplicateGroup": {"type": "object", "required": ["size", "members"],
                       "properties": {"size": {"type": "integer", "minimum": 2},
                                      "members": {"type": "array", "items": _ref("DuplicateMember"),
                                                  "description": "The keeper first, then the most similar."}}},
    "SearchResponse": {
        "type": "object", "required": ["query", "results", "total", "took_ms"],
        "properties": {
            "query": {
                "type": "object", "required": ["type", "tags", "limit", "offset"],
                "description": "The search as understood: its type, the words (q) or the image id, and the options.",
                "properties": {"type": {"enum": ["image", "text", "similar", "refine", "browse"]},
                               "q": {"type": "string"}, "sort": {"enum": list(SORTS)},
                               "id": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                               "taken_from": {"type": "string"}, "taken_to": {"type": "string"},
                               "camera": {"type": "array", "items": {"type": "string"}},
                               "folder": {"type": "array", "items": {"type": "string"}},
                               "file_type": {"type": "array", "items": {"type": "string"},
                                             "description": "the `type` filter's file types"},
                               "min_width": {"type": "integer"},
                               "min_height": {"type": "integer"},
                               "limit": {"type": "integer"}, "offset": {"type": "integer"},
                               "min_score": {"type": ["number", "null"]},
                               "crop": {"anyOf": [{"type": "null"}, {"type": "array", "items": {"type": "number"}}]},
                               "expand": {"type": "integer"},
                               "positive": {"type": "array", "items": {"type": "string"}},
                               "negative": {"type": "array", "items": {"type": "string"}},
                               "image": {"type": "boolean", "description": "refine: a picture was a positive"},
                               "collapse": {"enum": ["near", None]}},
            },
            "results": {"type": "array", "items": _ref("Result"), "description": "Best first."},
            "total": {"type": "integer", "minimum": 0,
                      "description": "How many images matched in all (for paging)."},
            "took_ms": {"type": "number", "minimum": 0},
        },
    },
    "Image": {
        "type": "object",
        "required": ["id", "filename", "tags", "width", "height", "bytes", "content_hash", "descriptor",
                     "indexed_at", "modified_at", "image_url", "thumbnail_url", "similar_url"],
        "properties": {
            "id": {"type": "string"}, "filename": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "width": {"type": "integer"}, "height": {"type": "integer"}, "bytes": {"type": "integer"},
            "content_hash": {"type": "string", "description": "SHA-256 of the file's bytes."},
            "descriptor": {"type": "string", "description": "Which model and pooling made the vector."},
            "indexed_at": {"type": "number", "description": "Unix time."},
            "modified_at": {"type": "number", "description": "The file's modification time when indexed."},
            **PHOTO,
            "image_url": {"type": "string"}, "thumbnail_url": {"type": "string"}, "similar_url": {"type": "string"},
            "labels": {"anyOf": [{"type": "null"}, {"type": "array", "items": _ref("Label")}],
                       "description": "Content labels, most confident first; null until the image is classified "
                                      "(an `index` run with labels on adds them)."},
        },
    },
    "Label": {"type": "object", "required": ["label", "confidence"],
                  "properties": {"label": {"type": "string", "description": "An ImageNet class (WordNet's name)."},
                                 "confidence": {"type": "number", "minimum": 0, "maximum": 1}}},
    "Tags": {
        "type": "object", "required": ["tags"],
        "properties": {"tags": {"type": "array", "items": {
            "type": "object", "required": ["tag", "count"],
            "properties": {"tag": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}}}},
    },
    "Stats": {
        "type": "object", "required": ["count", "descriptor", "backend", "model_loaded"],
        "properties": {"count": {"type": "integer", "minimum": 0},
                       "descriptor": {"type": ["string", "null"], "description": "null while the store is empty"},
                       "backend": {"type": "string", "description": " or ".join(BACKENDS)},
                       "model_loaded": {"type": "boolean"},
                       "model": {"type": ["object", "null"], "description": "what runs the model; null until loaded",
                                 "required": ["precision", "runtime", "reason", "cpu"],
                                 "properties": {"precision": {"enum": ["float32", "bfloat16", "int8"]},
                                                "runtime": {"type": "string"}, "reason": {"type": "string"},
                                                "cpu": {"type": "string"}}}},
    },
}

SEARCH_RESULTS = _json(_ref("SearchResponse"), "Results, best first.")


# A form field is text: tags there are one comma-separated string (JSON may also send a list).
FORM_TAGS = {"type": "string", "description": "Tags separated by commas; at most 20 of at most 100 characters."}
FILENAME = {"type": "string", "description": "The picture's file name, shown and searched by keyword (its last "
                                             "path part, without control characters, at most 255 characters; "
                                             "by default the stored file's name)."}


def _image_body(options: dict, json_only: dict | None = None, filters: bool = False) -> dict:
    """The picture as multipart file field `image` or JSON `image_base64`, with these options (and with
    `filters`, the filters) beside it. Any other field or key is refused (400), so additionalProperties is false."""
    return {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["image"], "additionalProperties": False,
            "properties": {"image": {"type": "string", "format": "binary", "description": "The picture (one file)."},
                           "tags": FORM_TAGS, **(FORM_FILTERS if filters else {}), **options}}},
        "application/json": {"schema": {
            "type": "object", "required": ["image_base64"], "additionalProperties": False,
            "properties": {"image_base64": {"type": "string", "contentEncoding": "base64",
                                            "description": "The picture's bytes in base64, standard or URL-safe, "
                                                           "padded or not (a data: URL works too)."},
                           "tags": TAGS_FIELD, **(JSON_FILTERS if filters else {}), **options,
                           **(json_only or {})}}},
    }}


SEARCH_OPTIONS = {"limit": LIMIT["schema"], "offset": OFFSET["schema"], "min_score": MIN_SCORE["schema"],
                  "collapse": COLLAPSE_SCHEMA}
IDS = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_MARKED}
REFINE_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "properties": {
        "positive": {**IDS, "description": "Ids of images to find more like (marked good)."},
        "negative": {**IDS, "description": "Ids of images to find fewer like (marked wrong)."},
        "image_base64": {"type": "string", "contentEncoding": "base64",
                         "description": "An uploaded picture counted as a positive (as in searchByImage)."},
        "crop": {**CROP_FIELD, "description": "A region of image_base64 to use instead of the whole picture."},
        "tags": TAGS_FIELD, **JSON_FILTERS, **SEARCH_OPTIONS, "expand": EXPAND_SCHEMA}}}}}


PATHS = {
    "/api/search/image": {"post": {
        "operationId": "searchByImage", "tags": ["search"], "summary": "Images that look like an uploaded picture",
        "description": "Send the picture as multipart field `image`, or as JSON `image_base64`. Options may "
                       "also be given in the query string. Any other form field or JSON key is refused (400). "
                       "In JSON, limit, offset and min_score are JSON numbers, not strings (5.0 counts as 5).",
        "parameters": [LIMIT, OFFSET, *FILTERS, MIN_SCORE, CROP, EXPAND, COLLAPSE],
        "requestBody": _image_body({**SEARCH_OPTIONS, "crop": CROP_TEXT, "expand": EXPAND_SCHEMA},
                                   {"crop": CROP_FIELD}, filters=True),
        "responses": {"200": SEARCH_RESULTS, **_errors("400", "409", "413", "415", "422", "503")},
    }},
    "/api/search": {"get": {
        "operationId": "searchByText", "tags": ["search"],
        "summary": "Keyword search over file names, tags and content labels",
        "description": "Case-insensitive; every word must match a whole word or a word's beginning of the file "
                       "name or tags. Then come the images with a content label the words name (the label or a "
                       "broader word for it: `dog` finds every breed), most confident first; each result says "
                       "what matched (`matched`). Give q, filters, or both (filters alone list the matching "
                       "images by file name).",
        "parameters": [{"name": "q", "in": "query", "description": "Words.",
                        "schema": {"type": "string", "maxLength": MAX_QUERY_LENGTH}},
                       LIMIT, OFFSET, *FILTERS, COLLAPSE],
        "responses": {"200": SEARCH_RESULTS, **_errors("400", "503")},
    }},
    "/api/images/{id}/similar": {"get": {
        "operationId": "similarImages", "tags": ["search"], "summary": "More like an indexed image (refine)",
        "description": "Uses the image's stored vector (no model call); the image itself is left out. With "
                       "`crop`, the region of the image's file is described by the model instead.",
        "parameters": [ID, LIMIT, OFFSET, *FILTERS, MIN_SCORE, CROP, EXPAND, COLLAPSE],
        "responses": {"200": SEARCH_RESULTS, **_errors("400", "404", "409", "413", "415", "422", "503")},
    }},
    "/api/search/refine": {"post": {
        "operationId": "refineSearch", "tags": ["search"],
        "summary": "More like these, less like those: relevance feedback from marked images",
        "description": f"Images like the positives (ids, and image_base64 if given) and unlike the negatives, "
                       f"by one query vector (Rocchio: the positives' mean minus half the negatives' mean). Every "
                       f"marked image is left out of the results. At least one positive; at most {MAX_MARKED} "
                       f"ids in all; an id may not be both. Unknown ids answer 404 naming them (unknown_ids). "
                       f"Options may also be given in the query string.",
        "parameters": [LIMIT, OFFSET, *FILTERS, MIN_SCORE, EXPAND, COLLAPSE],
        "requestBody": REFINE_BODY,
        "responses": {"200": SEARCH_RESULTS, **_errors("400", "404", "409", "413", "415", "422", "503")},
    }},
    "/api/images": {"get": {
        "operationId": "listImages", "tags": ["images"], "summary": "Browse: the images that meet the filters",
        "description": "Every indexed image, narrowed by the filters, in the order `sort` names: taken (newest "
                       "taken first; undated ones after, newest indexed first), indexed (newest indexed first) or "
                       "name (by file name). Scores are 0.",
        "parameters": [LIMIT, OFFSET, {"name": "sort", "in": "query", "description": "The order (default taken).",
                                       "schema": {"enum": list(SORTS), "default": "taken"}}, *FILTERS],
        "responses": {"200": SEARCH_RESULTS, **_errors("400", "503")},
    }, "post": {
        "operationId": "addImage", "tags": ["images"], "summary": "Add an image to the index",
        "description": "Send the picture as multipart field `image`, or as JSON `image_base64` (with an optional "
                       "`filename`; multipart sends the file's own name). Any other form field or JSON key is "
                       "refused (400). Stores the file under the server's data directory (named by its content "
                       "hash) and indexes it under the client's file name. Uploading the same bytes again "
                       "replaces their tags and file name.",
        "security": [{"bearer": []}],
        "parameters": [TAGS],
        "requestBody": _image_body({}, {"filename": FILENAME}),
        "responses": {"201": _json(_ref("Image"), "Added.",
                                   {"Location": {"schema": {"type": "string"}, "required": True}}),
                      "200": _json(_ref("Image"), "The same bytes were already uploaded: tags and file name "
                                                  "updated."),
                      **_errors("400", "401", "403", "409", "413", "415", "422", "503")},
    }},
    "/api/images/{id}": {
        "get": {"operationId": "getImage", "tags": ["images"], "summary": "An image's metadata",
                "parameters": [ID],
                "responses": {"200": _json(_ref("Image"), "Metadata."), **_errors("400", "404", "503")}},
        "delete": {"operationId": "deleteImage", "tags": ["images"], "summary": "Remove an image from the index",
                   "description": "Uploaded files are deleted too; files indexed from folders stay on disk.",
                   "security": [{"bearer": []}], "parameters": [ID],
                   "responses": {"200": _json({"type": "object", "required": ["id", "deleted"],
                                               "properties": {"id": {"type": "string"},
                                                              "deleted": {"const": True}}}, "Removed."),
                                 **_errors("400", "401", "403", "404", "503")}},
    },
    "/api/images/{id}/tags": {"put": {
        "operationId": "setImageTags", "tags": ["images"], "summary": "Replace an image's tags",
        "description": "JSON `{\"tags\": [...]}`; the page adds a suggested content label this way. The image "
                       "keeps its vector and labels. An `index` run given tag options decides the tags of the "
                       "files it indexes again.",
        "security": [{"bearer": []}], "parameters": [ID],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["tags"], "additionalProperties": False,
            "properties": {"tags": TAGS_FIELD}}}}},
        "responses": {"200": _json(_ref("Image"), "The image with its new tags."),
                      **_errors("400", "401", "403", "404", "503")},
    }},
    "/api/images/{id}/file": {"get": {
        "operationId": "getImageFile", "tags": ["images"], "summary": "The image file",
        "parameters": [ID],
        "responses": {"200": {"description": "The bytes, with the file's content type.", "headers": CACHE_HEADERS,
                              "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                          "application/octet-stream": {"schema": {"type": "string",
                                                                                  "format": "binary"}}}},
                      "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                      **_errors("400", "404", "503")},
    }},
    "/api/images/{id}/thumbnail": {"get": {
        "operationId": "getImageThumbnail", "tags": ["images"],
        "summary": "A JPEG thumbnail (made once, then cached)",
        "parameters": [ID],
        "responses": {"200": {"description": "A JPEG no larger than LOOKALIKE_THUMBNAIL_SIZE on each side.",
                              "headers": CACHE_HEADERS,
                              "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                      "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                      **_errors("400", "404", "413", "415", "422", "503")},
    }},
    "/api/duplicates": {"get": {
        "operationId": "listDuplicates", "tags": ["duplicates"],
        "summary": "Groups of copies and near copies in the collection, largest first",
        "description": "Each group lists its members with the suggested keeper first. Groups are paged with "
                       "limit and offset; the filters keep only members that meet them (a group needs two).",
        "parameters": [LEVEL, DUPLICATE_SCORE, *FILTERS, LIMIT, OFFSET],
        "responses": {"200": _json({"type": "object", "required": ["query", "groups", "total", "pictures", "took_ms"],
                                    "properties": {
                                        "query": {"type": "object", "required": ["level", "min_score", "tags",
                                                                                 "limit", "offset"]},
                                        "groups": {"type": "array", "items": _ref("DuplicateGroup")},
                                        "total": {"type": "integer", "minimum": 0, "description": "groups in all"},
                                        "pictures": {"type": "integer", "minimum": 0,
                                                     "description": "pictures in all groups"},
                                        "took_ms": {"type": "number", "minimum": 0}}},
                                   "Groups, largest first."),
                      **_errors("400", "503")},
    }},
    "/api/images/{id}/duplicates": {"get": {
        "operationId": "imageDuplicates", "tags": ["duplicates"], "summary": "The group of one image",
        "parameters": [ID, LEVEL, DUPLICATE_SCORE],
        "responses": {"200": _json({"type": "object", "required": ["query", "group"],
                                    "properties": {"query": {"type": "object"},
                                                   "group": {"anyOf": [{"type": "null"}, _ref("DuplicateGroup")],
                                                             "description": "null: the image has no duplicate"}}},
                                   "Its group, the keeper first."),
                      **_errors("400", "404", "503")},
    }},
    "/api/facets": {"get": {
        "operationId": "facets", "tags": ["images"],
        "summary": "How many images each tag, camera, folder and year holds among those that meet the filters",
        "parameters": [{"name": "limit", "in": "query", "description": "Values per facet (default 50).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_FACET_VALUES, "default": 50}},
                       *FILTERS],
        "responses": {"200": _json(_ref("Facets"), "Most frequent first, ties by value."), **_errors("400", "503")},
    }},
    "/api/tags": {"get": {
        "operationId": "listTags", "tags": ["search"], "summary": "The most used tags and their counts",
        "parameters": [{"name": "limit", "in": "query", "description": "How many tags (default 50).",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}}],
        "responses": {"200": _json(_ref("Tags"), "Most used first."), **_errors("400", "503")},
    }},
    "/api/health": {"get": {
        "operationId": "health", "tags": ["service"], "summary": "The process is alive",
        "responses": {"200": _json({"type": "object", "required": ["status"],
                                    "properties": {"status": {"const": "ok"}}}, "Alive."),
                      **_errors("400")},
    }},
    "/api/ready": {"get": {
        "operationId": "ready", "tags": ["service"], "summary": "The model is loaded and the store answers",
        "responses": {
            "200": _json({"type": "object", "required": ["status", "checks"],
                          "properties": {"status": {"const": "ready"}, "checks": _ref("Checks"),
                                         "warm": {"type": "boolean", "description":
                                                  "this worker has run its model once at every input shape "
                                                  "(a background warm-up after start; not needed to serve)"},
                                         "degraded": {"type": "string", "description":
                                                      "present when the store answers at less than full "
                                                      "strength (an Elasticsearch replica lost)"}}},
                         "Ready."),
            "503": _json({"allOf": [_ref("Error"), {"type": "object", "required": ["checks"],
                                                    "properties": {"checks": _ref("Checks")}}]},
                         "Not ready; the message and checks say what is missing."),
            **_errors("400"),
        },
    }},
    "/api/stats": {"get": {
        "operationId": "stats", "tags": ["service"], "summary": "Document count, descriptor and backend",
        "responses": {"200": _json(_ref("Stats"), "Statistics."), **_errors("400", "503")},
    }},
    "/api/openapi.json": {"get": {
        "operationId": "openapi", "tags": ["service"], "summary": "This document",
        "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document."), **_errors("400")},
    }},
}

_COUNTS = {"type": "array", "items": {"type": "object", "required": ["value", "count"],
                                      "properties": {"value": {"type": "string"},
                                                     "count": {"type": "integer", "minimum": 1}}}}
SCHEMAS["Facets"] = {"type": "object", "required": ["filters", "tags", "camera", "folder", "year", "labels"],
                     "properties": {"filters": {"type": "object", "description": "The filters as understood."},
                                    "tags": _COUNTS, "camera": _COUNTS, "folder": _COUNTS,
                                    "year": {**_COUNTS, "description": "Years taken (YYYY)."},
                                    "labels": {**_COUNTS, "description": "Content labels (the pictures that "
                                                                         "carry each)."}}}
SCHEMAS["Checks"] = {"type": "object", "required": ["model", "store"],
                     "properties": {"model": {"type": "boolean"}, "store": {"type": "boolean"}}}


@cache
def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "lookalike", "version": VERSION,
                 "description": "Content-based image search: find indexed images that look like a picture, "
                                "by keywords, or like an indexed image. Every error is JSON "
                                "{\"error\": {\"code\", \"message\"}}. See docs/api.md."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "LOOKALIKE_API_KEY"}}},
    }
