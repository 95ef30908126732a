"""OnPolicyBuffer: connects samplers to the learner and refuses samples that are too old.

Every batch carries the policy version that drew it. When the learner asks for data at
version v, a batch drawn at version u is served only if v - u <= max_staleness (0 by
default: strictly on-policy); older batches are dropped and counted, never silently used.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import ray


class OnPolicyBufferImpl:
    def __init__(self, max_staleness: int = 0) -> None:
        self.max_staleness = max_staleness
        self.batches: deque[tuple[int, Any]] = deque()
        self.stats = {"put": 0, "served": 0, "refused_stale": 0, "staleness_sum": 0, "staleness_max": 0}

    def put(self, version: int, batch: Any) -> int:
        self.batches.append((version, batch))
        self.stats["put"] += 1
        return len(self.batches)

    def take(self, current_version: int) -> list[tuple[int, Any]]:
        """All fresh-enough batches, oldest first, as (staleness, batch); stale ones are refused."""
        served = []
        while self.batches:
            version, batch = self.batches.popleft()
            staleness = current_version - version
            if staleness < 0:
                raise ValueError(f"a batch from version {version} is newer than the learner's {current_version}")
            if staleness > self.max_staleness:
                self.stats["refused_stale"] += 1
                continue
            self.stats["served"] += 1
            self.stats["staleness_sum"] += staleness
            self.stats["staleness_max"] = max(self.stats["staleness_max"], staleness)
            served.append((staleness, batch))
        return served

    def report(self) -> dict[str, float]:
        served = max(self.stats["served"], 1)
        return {
            "buffer/served": float(self.stats["served"]),
            "buffer/refused_stale": float(self.stats["refused_stale"]),
            "buffer/mean_staleness": self.stats["staleness_sum"] / served,
            "buffer/max_staleness": float(self.stats["staleness_max"]),
            "buffer/size": float(len(self.batches)),
        }

    def get_state(self) -> dict:
        return {"batches": list(self.batches), "stats": dict(self.stats)}

    def set_state(self, state: dict) -> None:
        self.batches = deque(state["batches"])
        self.stats = dict(state["stats"])


OnPolicyBuffer = ray.remote(OnPolicyBufferImpl)
