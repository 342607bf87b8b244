"""The stretch catalog: stretches.toml as data, and which stretch a nudge for a deficit suggests.

Every problem in a catalog file raises CatalogError with one line naming the file and the entry.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

DEFICITS = ("slouch", "rotation", "lean", "sitting")
SIDES = ("left", "right")
UNKNOWN_SIDE = "less-used side"  # fills "{side}" when the alert cannot tell which side
_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class CatalogError(ValueError):
    """A stretch catalog is missing, malformed or incomplete."""


@dataclass(frozen=True)
class Stretch:
    id: str
    name: str
    addresses: tuple[str, ...]  # deficits from DEFICITS
    steps: tuple[str, ...]  # may hold "{side}", filled by as_payload
    hold_s: int  # per hold; 0 when there is nothing to hold (a walk)
    reps: int  # holds, on each side when per_side
    per_side: bool
    contraindications: tuple[str, ...]
    duration_min: float | None = None

    def as_payload(self, side: str | None, safety: str) -> dict[str, Any]:
        if side is not None and side not in SIDES:
            raise ValueError(f"side must be one of {SIDES} or None, got {side!r}")
        # str.replace, not str.format: step text comes from a user file and is data, not a template language.
        fill = side if side is not None else UNKNOWN_SIDE
        payload: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "steps": [step.replace("{side}", fill) for step in self.steps],
            "hold_s": self.hold_s,
            "reps": self.reps,
            "per_side": self.per_side,
            "side": side,
            "contraindications": list(self.contraindications),
            "safety": safety,
        }
        if self.duration_min is not None:
            payload["duration_min"] = self.duration_min
        return payload


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is not a rep count


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(s, str) and s.strip() for s in value)


# key -> (is the value valid, what a valid value is); the one place a new key is declared.
_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "id": (lambda v: isinstance(v, str) and _SLUG.fullmatch(v), "a slug like 'seated-trunk-rotation'"),
    "name": (lambda v: isinstance(v, str) and v.strip(), "a non-empty string"),
    "addresses": (lambda v: _strings(v) and v, f"a non-empty list from {', '.join(DEFICITS)}"),
    "steps": (lambda v: _strings(v) and v, "a non-empty list of non-empty strings"),
    "hold_s": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "reps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "per_side": (lambda v: isinstance(v, bool), "true or false"),
    "contraindications": (_strings, "a list of non-empty strings"),
    "duration_min": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
}
_OPTIONAL = {"duration_min"}


def _stretch(entry: Any, where: str) -> Stretch:
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be a table")
    if unknown := sorted(entry.keys() - _KEYS.keys()):
        raise CatalogError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    for key, (valid, expected) in _KEYS.items():
        if key not in entry:
            if key in _OPTIONAL:
                continue
            raise CatalogError(f"{where}: missing {key!r}")
        if not valid(entry[key]):
            raise CatalogError(f"{where}: {key!r} must be {expected}, got {entry[key]!r}")
    if unknown := [d for d in entry["addresses"] if d not in DEFICITS]:
        raise CatalogError(f"{where}: unknown deficit {unknown[0]!r} (known: {', '.join(DEFICITS)})")
    for step in entry["steps"]:
        if set("{}") & set(step.replace("{side}", "")):  # a typo like "{sdie}" would reach the phone
            raise CatalogError(f"{where}: step {step!r} has a placeholder other than {{side}}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
    if "duration_min" in values:
        values["duration_min"] = float(values["duration_min"])
    return Stretch(**values)


@dataclass(frozen=True)
class Catalog:
    safety: str
    stretches: tuple[Stretch, ...]

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """The packaged stretches.toml when path is None, else the user's file at path."""
        source = resources.files("alerts") / "stretches.toml" if path is None else Path(path)
        name = str(source)
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogError(f"cannot read stretch catalog {name} ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{name}: invalid TOML: {' '.join(str(exc).split())}") from None
        if unknown := sorted(data.keys() - {"safety", "stretch"}):
            raise CatalogError(f"{name}: unknown top-level key {unknown[0]!r} (known: safety, stretch)")
        safety = data.get("safety")
        if not isinstance(safety, str) or not safety.strip():
            raise CatalogError(f"{name}: 'safety' must be a non-empty string")
        entries = data.get("stretch")
        if not isinstance(entries, list) or not entries:
            raise CatalogError(f"{name}: needs at least one [[stretch]] table")
        stretches: list[Stretch] = []
        for number, entry in enumerate(entries, 1):
            label = entry.get("id") if isinstance(entry, dict) else None
            stretch = _stretch(entry, f"{name}: stretch #{number}" + (f" ({label!r})" if label else ""))
            if any(s.id == stretch.id for s in stretches):
                raise CatalogError(f"{name}: stretch #{number}: duplicate id {stretch.id!r}")
            stretches.append(stretch)
        for deficit in DEFICITS:
            if not any(deficit in s.addresses for s in stretches):
                raise CatalogError(f"{name}: no stretch addresses {deficit!r}; every deficit needs one")
        return cls(safety=" ".join(safety.split()), stretches=tuple(stretches))

    def for_deficit(self, deficit: str) -> tuple[Stretch, ...]:
        if deficit not in DEFICITS:
            raise CatalogError(f"unknown deficit {deficit!r} (known: {', '.join(DEFICITS)})")
        return tuple(s for s in self.stretches if deficit in s.addresses)

    def choose(self, deficit: str, recent_ids: Sequence[str]) -> Stretch:
        """The candidate for deficit used least recently; recent_ids lists ids most recent first."""
        # The first occurrence of an id is its latest use; never used ranks after everything.
        last_used = {sid: age for age, sid in reversed(list(enumerate(recent_ids)))}
        never = len(recent_ids)
        # max() keeps the first of equals, so ties (all never used) go by catalog order.
        return max(self.for_deficit(deficit), key=lambda s: last_used.get(s.id, never))
