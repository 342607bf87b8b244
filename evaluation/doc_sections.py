"""Regenerated tables inside hand-written docs: replace what sits between two HTML comment markers."""

from __future__ import annotations

import os
import time
from pathlib import Path


def write_section(doc: Path, name: str, text: str) -> None:
    """Put `text` between <!-- name --> and <!-- end name --> in `doc`, appending the pair if absent."""
    begin, end = f"<!-- {name} -->", f"<!-- end {name} -->"
    current = doc.read_text() if doc.exists() else ""
    head, found, rest = current.partition(begin)
    tail = rest.split(end, 1)[1] if found and end in rest else ""
    if not found:
        head = current + ("\n" if current and not current.endswith("\n") else "")
    doc.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")


def write_measurement(doc: Path, name: str, text: str, command: str) -> None:
    """A benchmark's table plus the line saying where, when and how it was measured."""
    write_section(doc, name, f"{text.rstrip()}\n\nMachine: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
                             f"`{command}`.")
