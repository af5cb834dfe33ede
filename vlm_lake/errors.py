"""Exceptions raised by the core, each naming the bad input and what was expected."""

from __future__ import annotations


class VLMLakeError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidImageError(VLMLakeError):
    """An object under the images prefix is not a decodable image."""

    def __init__(self, source_uri: str, problem: str) -> None:
        self.source_uri = source_uri
        self.problem = problem
        super().__init__(
            f"image object {source_uri!r} is not a decodable image: {problem} "
            "(expected image bytes that Pillow can decode: JPEG, PNG, WebP, BMP, GIF or TIFF)"
        )


class InvalidDocumentError(VLMLakeError):
    """A text source is not valid JSON / JSON Lines, or a record breaks the contract.

    ``stage`` says where it was found: ``listing`` (the file's name), ``read`` (not UTF-8),
    ``parse`` (not JSON / JSON Lines) or ``record`` (a record breaks the contract).
    """

    def __init__(
        self, source_uri: str, problem: str, *, line: int | None = None, stage: str = "record"
    ) -> None:
        self.source_uri = source_uri
        self.problem = problem
        self.line = line
        self.stage = stage
        where = f"{source_uri!r}" + (f" line {line}" if line is not None else "")
        super().__init__(f"text source {where}: {problem}")


class DuplicateKeyError(VLMLakeError):
    """Two inputs produce the same primary key (image_id or docid)."""


class SourceNotFoundError(VLMLakeError):
    """A configured source URI holds no usable objects."""


class DatasetNotFoundError(VLMLakeError):
    """A Lance dataset that a step reads does not exist yet."""


class NotPublishedError(VLMLakeError):
    """A Lance dataset exists but none of its versions has passed its blocking checks."""
