"""Parse a JSON array from a stream of byte chunks, one element at a time.

Memory is one chunk plus the largest element, whatever the array's size: the training
JSON check reads files of many gigabytes this way.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

#: Bytes of one record the training JSON check holds at most while it looks for the record's
#: end; a record larger than this is reported as unparsable instead of filling memory.
MAX_RECORD_BYTES = 256 * 1024 * 1024


class JSONArrayError(ValueError):
    """A JSON array that does not parse, with the line and column (1-based) of the fault."""

    def __init__(self, msg: str, line: int, column: int) -> None:
        super().__init__(f"{msg} at line {line} column {column}")
        self.msg, self.line, self.column = msg, line, column


def stream_json_array(
    chunks: Iterable[bytes], max_record_bytes: int = MAX_RECORD_BYTES
) -> Iterator[Any]:
    """Yield the elements of a JSON array read as a stream of byte chunks, one at a time.

    Memory is one chunk plus the largest element, whatever the file's size: consumed text is
    dropped from the buffer, and an element split across chunks is decoded again once more
    text arrived.

    Raises:
        JSONArrayError: The text is not one JSON array (with line and column).
    """
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    source = iter(chunks)
    text, i, eof, lines_dropped = "", 0, False, 0

    def read_more() -> bool:
        nonlocal text, i, eof, lines_dropped
        if eof:
            return False
        chunk = next(source, None)
        lines_dropped += text.count("\n", 0, i)
        text = text[i:] + (utf8.decode(b"", final=True) if chunk is None else utf8.decode(chunk))
        i, eof = 0, chunk is None
        return True

    def fail(msg: str, pos: int) -> JSONArrayError:
        line = lines_dropped + text.count("\n", 0, pos) + 1
        return JSONArrayError(msg, line, pos - text.rfind("\n", 0, pos))

    def skip() -> None:
        nonlocal i
        while True:
            while i < len(text) and text[i] in " \t\r\n":
                i += 1
            if i < len(text) or not read_more():
                return

    def expect_end() -> None:
        skip()
        if i != len(text):
            raise fail("extra data after the array", i)

    skip()
    if i >= len(text) or text[i] != "[":
        raise fail("expected '['", i)
    i += 1
    skip()
    if i < len(text) and text[i] == "]":
        i += 1
        expect_end()
        return
    while True:
        while True:
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                if len(text) - i > max_record_bytes or not read_more():
                    raise fail(exc.msg, exc.pos) from exc
                continue
            if end == len(text) and read_more():  # a number may go on in the next chunk
                continue
            break
        yield value
        i = end
        skip()
        if i < len(text) and text[i] == ",":
            i += 1
            skip()
            continue
        if i < len(text) and text[i] == "]":
            i += 1
            expect_end()
            return
        raise fail("expected ',' or ']'", i)
