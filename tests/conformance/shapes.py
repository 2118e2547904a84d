"""Does a response have Kite's shape? Keys and value kinds, compared with recorded samples.

Lists of objects are compared with every recorded element at once: an object must carry each key
all of Kite's elements carry, and no key none of them carries (Kite's own orders differ in their
optional keys). A list of mixed scalars (a candle) is positional. ``null`` matches any kind: Kite
sends it for a value that is absent.
"""

from __future__ import annotations

from typing import Any


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _positional(lists: list[list[Any]]) -> bool:
    return any(lst and all(kind(v) not in ("list", "dict") for v in lst) and len({kind(v) for v in lst}) > 1
               for lst in lists)


def mismatches(ours: Any, samples: list[Any], path: str = "data") -> list[str]:
    """Where ``ours`` departs from the shape of the recorded ``samples`` (values at the same place)."""
    samples = [s for s in samples if s is not None]
    if ours is None or not samples:
        return []
    kinds = {kind(s) for s in samples}
    if kind(ours) not in kinds:
        return [f"{path}: a {kind(ours)} where Kite has {'/'.join(sorted(kinds))}"]
    if isinstance(ours, dict):
        dicts = [s for s in samples if isinstance(s, dict)]
        always = set.intersection(*(set(d) for d in dicts))
        ever = set().union(*dicts)
        out = [f"{path}: no {key!r}" for key in sorted(always - set(ours))]
        out += [f"{path}: {key!r}, which Kite never sends" for key in sorted(set(ours) - ever)]
        for key in sorted(set(ours) & ever):
            out += mismatches(ours[key], [d[key] for d in dicts if key in d], f"{path}.{key}")
        return out
    if isinstance(ours, list):
        lists = [s for s in samples if isinstance(s, list)]
        if _positional(lists):
            out = [f"{path}: {len(ours)} items where Kite has {len(lst)}" for lst in lists if len(lst) != len(ours)]
            for i, value in enumerate(ours):
                out += mismatches(value, [lst[i] for lst in lists if i < len(lst)], f"{path}[{i}]")
            return out
        items = [item for lst in lists for item in lst]
        return [m for i, value in enumerate(ours) for m in mismatches(value, items, f"{path}[{i}]")]
    return []
