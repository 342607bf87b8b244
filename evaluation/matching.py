"""Matching detected intervals to true ones, and the F1 score of the match."""

from __future__ import annotations


def match_intervals(truth: list[tuple[float, float, str]], found: list[tuple[float, float, str]],
                    min_iou: float = 0.3) -> tuple[list[tuple[int, int]], float]:
    """One-to-one matches (truth index, found index) with the same label and enough overlap, and F1.

    Greedy by overlap, best first: with events that rarely overlap each other this is the optimum.
    """
    candidates = []
    for i, (a0, a1, la) in enumerate(truth):
        for j, (b0, b1, lb) in enumerate(found):
            inter = min(a1, b1) - max(a0, b0)
            if la == lb and inter > 0:
                iou = inter / (max(a1, b1) - min(a0, b0))
                if iou >= min_iou:
                    candidates.append((iou, i, j))
    pairs, used_t, used_f = [], set(), set()
    for _, i, j in sorted(candidates, reverse=True):
        if i not in used_t and j not in used_f:
            pairs.append((i, j))
            used_t.add(i)
            used_f.add(j)
    total = len(truth) + len(found)
    return sorted(pairs), (2 * len(pairs) / total if total else 1.0)
