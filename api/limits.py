"""How many runs each identity may have going at once (429 with ``Retry-After`` beyond it).

A run is counted from the moment it is accepted until it ends, also when its client has gone away: runs are
detached from their requests (see :mod:`api.sse`). In-process counts: with several API workers each one counts its
own (the limit is then per worker).
"""

from __future__ import annotations

from collections import Counter

from fastapi import HTTPException, status

RETRY_AFTER_S = 5


class RunSlots:
    """Per-identity counters of runs in flight."""

    def __init__(self, per_identity: int) -> None:
        self.per_identity = per_identity
        self._running: Counter[str] = Counter()

    def take(self, identity: str) -> None:
        """Count one more run for ``identity``.

        Raises:
            HTTPException: 429 with ``Retry-After`` when ``identity`` already has ``per_identity`` runs going.
        """
        if self._running[identity] >= self.per_identity:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"{identity} already has {self._running[identity]} runs going (the limit is {self.per_identity}); "
                "wait for one to finish",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._running[identity] += 1

    def give_back(self, identity: str) -> None:
        """One run of ``identity`` ended."""
        self._running[identity] -= 1
        if self._running[identity] <= 0:
            del self._running[identity]
