"""The stretch catalog: the packaged content, the rotation of choices, payloads and bad user files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerts.catalog import DEFICITS, Catalog, CatalogError

GOOD_ENTRIES = {
    "slouch": '''
[[stretch]]
id = "chest"
name = "Chest opener"
addresses = ["slouch"]
steps = ["Stand in a doorway.", "Lean forward."]
hold_s = 20
reps = 3
per_side = false
contraindications = []
''',
    "rotation": '''
[[stretch]]
id = "twist"
name = "Trunk rotation"
addresses = ["rotation"]
steps = ["Turn to your {side}."]
hold_s = 5
reps = 5
per_side = true
contraindications = ["acute back pain"]
''',
    "lean": '''
[[stretch]]
id = "bend"
name = "Side bend"
addresses = ["lean"]
steps = ["Bend to your {side}."]
hold_s = 15
reps = 3
per_side = true
contraindications = []
''',
    "sitting": '''
[[stretch]]
id = "walk"
name = "Walking break"
addresses = ["sitting"]
steps = ["Walk."]
hold_s = 0
reps = 1
per_side = false
contraindications = []
duration_min = 4
''',
}
SAFETY = 'safety = "Never into pain."\n'


# Tests sharing a module-scoped fixture run on one xdist worker, so it is built once.
pytestmark = pytest.mark.xdist_group("stretch-catalog")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-stretches.toml"
    path.write_text(text, encoding="utf-8")
    return path


def good_file(**replace: str) -> str:
    return SAFETY + "".join(replace.get(deficit, entry) for deficit, entry in GOOD_ENTRIES.items())


def test_packaged_catalog_has_the_required_stretches(catalog):
    names = [s.name.lower() for s in catalog.stretches]
    for wanted in ("trunk rotation", "toe touch", "walk", "side bend", "extension"):
        assert any(wanted in name for name in names), wanted
    assert any("knees bent" in name or "on your back" in name for name in names)
    for deficit in DEFICITS:
        assert len(catalog.for_deficit(deficit)) >= 2, deficit
    safety = catalog.safety.lower()
    assert "pain" in safety and ("physical therapist" in safety or "doctor" in safety)


def test_packaged_catalog_follows_the_content_rules(catalog):
    for stretch in catalog.stretches:
        assert 3 <= len(stretch.steps) <= 6, stretch.id
        assert all(len(step) < 90 for step in stretch.steps), stretch.id
        assert stretch.reps >= 1 and stretch.hold_s >= 0
    rotation_and_lean = catalog.for_deficit("rotation") + catalog.for_deficit("lean")
    assert all(any("{side}" in step for step in s.steps) for s in rotation_and_lean)
    walk = next(s for s in catalog.stretches if "walk" in s.name.lower())
    assert walk.hold_s == 0 and walk.duration_min is not None and 3 <= walk.duration_min <= 5
    twists = catalog.for_deficit("rotation")
    assert all(any("osteoporosis" in c for c in s.contraindications) for s in twists)


def test_a_sitting_nudge_breaks_the_sitting_where_the_wearer_is(catalog):
    # Lying down is sedentary too, and the nudge reaches someone in a chair: first a walk, never a mat.
    assert catalog.choose("sitting", []).id == "walking-break"
    for stretch in catalog.for_deficit("sitting"):
        assert not any(word in step.lower() for step in stretch.steps for word in ("lie ", "lying", "mat")), stretch.id


@pytest.mark.parametrize("deficit", DEFICITS)
def test_choose_rotates_through_every_candidate(catalog, deficit):
    candidates = [s.id for s in catalog.for_deficit(deficit)]
    recent: list[str] = []
    for _ in range(3 * len(candidates)):
        chosen = catalog.choose(deficit, recent).id
        assert not recent or chosen != recent[0]
        recent.insert(0, chosen)
    # Least recently used means a fixed cycle: each window of len(candidates) holds every one once.
    n = len(candidates)
    for start in range(len(recent) - n + 1):
        assert sorted(recent[start : start + n]) == sorted(candidates)


def test_choose_counts_uses_for_other_deficits_and_prefers_never_used(catalog, tmp_path):
    # A user's catalog may share a stretch between deficits (the packaged one no longer does).
    both = GOOD_ENTRIES["slouch"].replace('"chest"', '"roll"').replace('["slouch"]', '["slouch", "sitting"]')
    mine = Catalog.load(write(tmp_path, good_file(slouch=GOOD_ENTRIES["slouch"] + both)))
    assert mine.choose("sitting", []).id == "roll"  # catalog order breaks ties
    # Just used for slouch, so a sitting nudge picks another one.
    assert mine.choose("sitting", ["roll"]).id == "walk"
    # Among used ones, the one used furthest back; ids of other deficits do not matter.
    a, b = catalog.for_deficit("rotation")[:2]
    assert catalog.choose("rotation", [a.id, "walking-break", b.id, a.id]).id == b.id
    assert catalog.choose("rotation", [b.id, a.id, b.id]).id == a.id


def test_choose_rejects_an_unknown_deficit(catalog):
    with pytest.raises(CatalogError, match="unknown deficit 'posture'"):
        catalog.choose("posture", [])


@pytest.mark.parametrize("deficit", ["rotation", "lean"])
def test_payload_fills_the_side(catalog, deficit):
    for stretch in catalog.for_deficit(deficit):
        payload = stretch.as_payload("left", catalog.safety)
        text = " ".join(payload["steps"])
        assert "left" in text and "{side}" not in text
        assert payload["side"] == "left" and payload["safety"] == catalog.safety
        unknown = stretch.as_payload(None, catalog.safety)
        text = " ".join(unknown["steps"])
        assert "{side}" not in text and "less-used side" in text and unknown["side"] is None
        assert set(payload) == {"id", "name", "steps", "hold_s", "reps", "per_side", "side",
                                "contraindications", "safety"}


def test_payload_carries_the_walk_duration(catalog):
    walk = next(s for s in catalog.stretches if s.duration_min is not None)
    payload = walk.as_payload(None, catalog.safety)
    assert payload["duration_min"] == walk.duration_min and payload["hold_s"] == 0
    assert isinstance(payload["steps"], list) and isinstance(payload["contraindications"], list)
    with pytest.raises(ValueError):
        walk.as_payload("up", catalog.safety)


def test_a_good_user_file_loads(tmp_path):
    loaded = Catalog.load(write(tmp_path, good_file()))
    assert [s.id for s in loaded.stretches] == ["chest", "twist", "bend", "walk"]
    assert loaded.stretches[1].steps == ("Turn to your {side}.",) and loaded.stretches[3].duration_min == 4.0
    assert loaded.safety == "Never into pain."


BAD_FILES = {
    "unknown deficit": (
        good_file(slouch=GOOD_ENTRIES["slouch"].replace('["slouch"]', '["slouch", "slump"]')),
        r"stretch #1 \('chest'\): unknown deficit 'slump'",
    ),
    "missing key": (
        good_file(rotation=GOOD_ENTRIES["rotation"].replace("reps = 5\n", "")),
        r"stretch #2 \('twist'\): missing 'reps'",
    ),
    "duplicate id": (
        good_file(lean=GOOD_ENTRIES["lean"].replace('id = "bend"', 'id = "twist"')),
        r"stretch #3: duplicate id 'twist'",
    ),
    "uncovered deficit": (good_file(lean=""), r"no stretch addresses 'lean'"),
    "wrong type": (
        good_file(sitting=GOOD_ENTRIES["sitting"].replace("hold_s = 0", 'hold_s = "none"')),
        r"'hold_s' must be an integer >= 0, got 'none'",
    ),
    "bad placeholder": (
        good_file(lean=GOOD_ENTRIES["lean"].replace("{side}", "{sdie}")),
        r"placeholder other than \{side\}",
    ),
    "unknown key": (
        good_file(slouch=GOOD_ENTRIES["slouch"].replace("reps = 3", "reps = 3\nrepz = 3")),
        r"unknown key 'repz'",
    ),
    "empty safety": (good_file().replace(SAFETY, 'safety = " "\n'), r"'safety' must be a non-empty string"),
    "invalid toml": (good_file() + "[[stretch]\n", r"invalid TOML"),
}


@pytest.mark.parametrize("problem", BAD_FILES)
def test_a_bad_user_file_raises_one_clear_line(tmp_path, problem):
    text, expected = BAD_FILES[problem]
    path = write(tmp_path, text)
    with pytest.raises(CatalogError) as caught:
        Catalog.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    assert re.search(expected, message), message


def test_a_missing_user_file_names_it(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(CatalogError, match=re.escape(f"cannot read stretch catalog {missing}")):
        Catalog.load(missing)
