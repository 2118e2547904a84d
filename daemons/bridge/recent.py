"""A bounded window of event ids, oldest forgotten first: what the bridge has already put on this host's bus."""

from __future__ import annotations

from collections import OrderedDict


class RecentIds:
    """``add`` and ``in``; beyond ``size`` ids the oldest is forgotten (a redelivery older than the
    window would be published again; the window is sized in events, far beyond a claim timeout's worth)."""

    __slots__ = ("_ids", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> None:
        ids = self._ids
        ids[event_id] = None
        if len(ids) > self.size:
            ids.popitem(last=False)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)
