"""LLaVA-style JSON from the LLaMA-Factory folder, streamed record by record.

``python -m vlm_lake.training.llava FOLDER`` writes ``FOLDER/llava.json`` next to
``vlm_lake.jsonl``, sharing its ``images/`` (paths stay relative to the folder, which is
LLaVA's ``image_folder``). Each sharegpt record becomes ``{"id", "image", "conversations":
[{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}``: ``image`` is a path
for a one-image record (LLaVA-1.5's form), a list for several (the multi-image form of
LLaVA-NeXT / OneVision), and absent for a text-only record; the ``<image>`` tokens stay
where they are, one per image. Memory holds one record at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from vlm_lake.training.llamafactory import DATA_FILE

log = logging.getLogger(__name__)

LLAVA_FILE = "llava.json"
ROLES = {"user": "human", "assistant": "gpt"}


def llava_record(index: int, record: dict[str, Any]) -> dict[str, Any]:
    """One sharegpt record of the folder as a LLaVA record (``id`` is its line number).

    Raises:
        ValueError: A message has a role other than user or assistant.
    """
    conversations = []
    for message in record["messages"]:
        role = message["role"]
        if role not in ROLES:
            raise ValueError(f"record {index}: role={role!r} is not one of {sorted(ROLES)}")
        conversations.append({"from": ROLES[role], "value": message["content"]})
    out: dict[str, Any] = {"id": f"{index:09d}"}
    images = record.get("images") or []
    if images:
        out["image"] = images[0] if len(images) == 1 else images
    out["conversations"] = conversations
    return out


def write_llava(folder: str | Path) -> int:
    """Write ``folder/llava.json`` from ``folder/vlm_lake.jsonl`` (atomically).

    Returns:
        The number of records written.
    """
    folder = Path(folder)
    source, target = folder / DATA_FILE, folder / LLAVA_FILE
    partial = target.with_name(f".{LLAVA_FILE}.part")
    count = 0
    with source.open(encoding="utf-8") as lines, partial.open("w", encoding="utf-8") as out:
        out.write("[")
        for count, line in enumerate(lines, start=1):
            record = llava_record(count - 1, json.loads(line))
            out.write(("\n" if count == 1 else ",\n") + json.dumps(record, ensure_ascii=False))
        out.write("\n]\n")
    os.replace(partial, target)
    log.info("wrote %d LLaVA records to %s", count, target)
    return count


def main(argv: list[str] | None = None) -> None:
    """``python -m vlm_lake.training.llava FOLDER``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the LLaMA-Factory folder (a local copy of it)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_llava(parser.parse_args(argv).folder)


if __name__ == "__main__":
    main()
