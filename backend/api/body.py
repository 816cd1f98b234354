"""The body of the requests that carry a picture (searching by image, uploading): the multipart file
field `image`, or JSON `image_base64`, beside the endpoint's options.

Both endpoints read it here, so they accept the same shapes and refuse the same mistakes.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Mapping

from flask import request

from .errors import ApiError
from .params import QUERY_PARAMETERS, bad, got, refuse_unknown


@dataclass(frozen=True)
class ImageBody:
    data: bytes
    fields: Mapping[str, Any]   # the form fields or the JSON object, for params.Source
    filename: str | None        # the client's name for the picture, as sent (unchecked)


def read_image(*, named: bool = False) -> ImageBody:
    """The picture and the body's fields. The body takes the options the endpoint takes in the query
    string, and no other field: a misspelt option must not be ignored. named: JSON may give `filename`
    (multipart sends it with the file)."""
    options = QUERY_PARAMETERS[str(request.endpoint)]
    if request.mimetype == "multipart/form-data":
        refuse_unknown("form field", [*request.form, *request.files], ("image", *options))
        images = request.files.getlist("image")
        if "image" in request.form or not images:  # a text field named image is not a picture
            raise ApiError(400, "missing_image", "send the picture as the multipart file field 'image'")
        if len(images) > 1:
            raise bad(f"send one image: the file field 'image' is given {len(images)} times")
        return ImageBody(images[0].read(), request.form, images[0].filename)
    if request.is_json:
        body = json_object()
        refuse_unknown("JSON key", body, ("image_base64", *options, *(("filename",) if named else ())))
        filename = body.get("filename")
        if "filename" in body and not isinstance(filename, str):
            raise bad(f"filename must be a string {got(filename, True)}")
        return ImageBody(image_base64(body.get("image_base64")), body, filename)
    raise ApiError(415, "unsupported_media_type",
                   "send multipart/form-data with a file field 'image', or application/json with image_base64")


def json_object(example: str = '{"image_base64": "..."}') -> dict:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # absurdly nested JSON: json raises this, not ValueError
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", f"the body must be a JSON object such as {example}")
    return body


def image_base64(encoded) -> bytes:
    """Standard or URL-safe base64, padded or not, or a data: URL as the browser's FileReader makes."""
    if not isinstance(encoded, str) or not encoded.strip():
        raise ApiError(400, "missing_image", "image_base64 must be a non-empty base64 string")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    encoded = "".join(encoded.split()).replace("-", "+").replace("_", "/")
    encoded += "=" * (-len(encoded) % 4)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise ApiError(400, "bad_base64", "image_base64 is not valid base64") from None
