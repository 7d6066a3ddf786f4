"""A prediction request's images: read from multipart form data or a raw body, decoded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit.base import log
from cnnkit.data.decode import CorruptImageError, ImageTooLargeError, UnsupportedFormatError
from cnnkit.runtime.predict import Classifier

RAW_TYPES = ("image/", "application/octet-stream")
FORM_OPTIONS = ("top_k", "threshold")  # the text fields a form may hold beside its images


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


async def read_uploads(request: Request, max_files: int
                       ) -> tuple[list[Upload], dict[str, str]]:
    """The images of a request and the options its form sent (:data:`FORM_OPTIONS`); any
    other text field is refused, since a misspelt option would be answered without it."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=max_files, max_fields=16)
        except StarletteHTTPException as exc:
            if "files" in str(exc.detail).lower():
                raise HTTPException(413, f"At most {max_files} images per request; send "
                                         "the rest in another request.") from None
            raise HTTPException(400, f"The multipart form could not be read "
                                     f"({exc.detail}).") from None
        uploads, options, other = [], {}, []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads.append(Upload(value.filename or f"image-{len(uploads) + 1}",
                                      await value.read()))
            elif key in FORM_OPTIONS:
                options[key] = value
            else:
                other.append(key)
        await form.close()
        if other:
            raise HTTPException(422, f"The form field {log.cut(repr(other[0]), 60)} is not "
                                     f"an option: send {' and '.join(FORM_OPTIONS)} as form "
                                     "or query fields, and images as files (a part with a "
                                     "filename, e.g. curl -F file=@photo.jpg).")
        if not uploads:
            raise HTTPException(400, "The form holds no image: add one or more files "
                                     "(e.g. curl -F file=@photo.jpg).")
        return uploads, options
    if ctype and not ctype.startswith(RAW_TYPES):
        raise HTTPException(415, f"Content-Type {ctype.split(';')[0]!r} is not accepted: send "
                                 "images as multipart/form-data, or one image's raw bytes "
                                 "with Content-Type image/jpeg, image/png, ...")
    body = await request.body()
    if not body:
        raise HTTPException(400, "The request has no image: send multipart/form-data with "
                                 "files, or one image's raw bytes as the body.")
    return [Upload("image", body)], {}


@dataclass(frozen=True)
class Decoded:
    """One upload as the model reads it, or why it cannot be: an HTTP status and a line."""

    filename: str
    image: np.ndarray | None
    status: int = 200
    detail: str | None = None


def decode_uploads(classifier: Classifier, uploads: list[Upload],
                   formats: tuple[str, ...]) -> list[Decoded]:
    """Decode every upload as the model reads images; each bad one gets its own error
    (415 a format not allowed, 413 too large, 400 damaged), the rest are unaffected."""
    return [_decode(classifier, up, formats) for up in uploads]


def _decode(classifier: Classifier, up: Upload, formats: tuple[str, ...]) -> Decoded:
    try:
        return Decoded(up.filename, classifier.decode_image(up.data, formats=formats))
    except UnsupportedFormatError:
        return Decoded(up.filename, None, 415, f"{up.filename}: not an image in an allowed "
                                               f"format ({', '.join(formats)}).")
    except ImageTooLargeError as exc:
        return Decoded(up.filename, None, 413, _named(exc, up.filename) + ". Send a smaller "
                                               "image.")
    except CorruptImageError as exc:
        return Decoded(up.filename, None, 400, _named(exc, up.filename) + "; the file may be "
                                               "truncated or damaged.")


def _named(exc: Exception, filename: str) -> str:
    return str(exc).replace("<bytes>", filename, 1)
