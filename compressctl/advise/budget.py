"""The user's budget: feasibility limits on speedup, latency, size and accuracy drop.

Speedup and latency are a sitting's (``advise.timing``): the speedup over the
baseline timed together with it, the latency its estimate in that sitting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MB = 1_000_000  # sizes are decimal megabytes, as `ls -h --si` and the report show them


@dataclass(frozen=True)
class Budget:
    min_speedup: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    max_accuracy_drop: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def violations(self, figures: dict[str, Any]) -> dict[str, float]:
        """How far ``figures`` miss each limit (<= 0: met). Optuna's constraints use the same numbers."""
        found: dict[str, float] = {}
        if self.min_speedup is not None:
            found["min_speedup"] = self.min_speedup - figures["speedup"]
        if self.max_latency_ms is not None:
            found["max_latency_ms"] = figures["latency_ms"] - self.max_latency_ms
        if self.max_size_mb is not None:
            found["max_size_mb"] = figures["size_bytes"] / MB - self.max_size_mb
        if self.max_accuracy_drop is not None:
            found["max_accuracy_drop"] = figures["accuracy_drop"] - self.max_accuracy_drop
        return found

    def meets(self, figures: dict[str, Any]) -> bool:
        return all(v <= 1e-12 for v in self.violations(figures).values())

    def describe(self) -> str:
        parts = []
        if self.min_speedup is not None:
            parts.append(f"speedup >= {self.min_speedup:g}x")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_size_mb is not None:
            parts.append(f"size <= {self.max_size_mb:g} MB")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop:g}")
        return ", ".join(parts) or "no limits"
