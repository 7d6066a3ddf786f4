"""``--time`` inside the training loop: when training must end, and how far through its
schedule a phase is, by its steps or by the clock, whichever is further.

The plan picks epochs that fit the budget; when the run still falls behind (a busier
machine, a slow estimate), the clock moves the learning-rate schedule on faster, so the
rate anneals by the deadline instead of being cut off at a high value, and the phase
ends there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """The moment (``time.monotonic()``) by which the last training step must be done,
    and each phase's planned share of the time (its epochs and their validation)."""

    end: float
    phase_seconds: tuple[float, ...]

    @classmethod
    def after(cls, seconds: float, phase_seconds: tuple[float, ...]) -> Deadline:
        return cls(time.monotonic() + seconds, phase_seconds)

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.0)

    def phase(self, index: int) -> PhaseClock:
        """The clock of phase ``index`` starting now: the time left, shared among it and
        the phases after it as planned."""
        now = time.monotonic()
        planned = self.phase_seconds[index:] or (1.0,)
        total = sum(planned)
        share = planned[0] / total if total > 0 else 1.0 / len(planned)
        return PhaseClock(now, now + max(self.end - now, 0.0) * share)


@dataclass(frozen=True)
class PhaseClock:
    """One phase's start and end on the monotonic clock."""

    start: float
    end: float

    def elapsed_fraction(self) -> float:
        span = self.end - self.start
        if span <= 0:
            return 1.0
        return min(max((time.monotonic() - self.start) / span, 0.0), 1.0)

    def position(self, step: float, total: int) -> float:
        """Where the schedule of ``total`` steps stands at ``step``: the step itself, or
        further on when the clock is further through the phase."""
        return max(float(step), self.elapsed_fraction() * total)

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def duration(seconds: float) -> str:
    """``about 40 s``, ``about 12 min``, ``about 2 h 20 min``."""
    if seconds < 90:
        step = 1 if seconds < 20 else 5
        return f"about {max(1, round(seconds / step) * step)} s"
    minutes = seconds / 60
    if minutes < 60:
        return f"about {round(minutes)} min"
    hours, mins = divmod(round(minutes / 5) * 5, 60)
    return f"about {hours} h" + (f" {mins} min" if mins else "")
