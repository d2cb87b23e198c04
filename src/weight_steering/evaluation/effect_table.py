"""A steering method's effects as one long table: a row per (metric, arm) with its mean and 95% CI.

The arm says which contrast a row measures (:func:`weight_steering.evaluation.effects.method_effects`):

* ``"plus"``: Δ at α₊ against the reference (the unsteered base, α = 0);
* ``"minus"``: Δ at α₋ against the reference;
* ``"spread"``: α₊ against α₋, paired over identical rows;
* ``"base"``: the reference's own level (generation scores);
* ``None``: a number of the method as a whole (SI, the off-target |Δ₊|, the lowest answer-format mass).

Means are in the metric's units (nats of log-odds, nats per reply token, a rate); ``ci_low``/``ci_high`` are None where
the number has no interval (a mean answer-format mass, the base level of a generation score).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import pandas as pd

ARMS = ("plus", "minus", "spread", "base")
_ARM_SUFFIX = re.compile(r"^(.+)_(plus|minus|spread|base)$")


@dataclass(frozen=True)
class Effect:
    """One row of :class:`Effects`: ``metric`` at ``arm`` (see the module docstring), its mean and 95% CI."""

    metric: str
    arm: str | None
    mean: float
    ci_low: float | None = None
    ci_high: float | None = None

    def interval(self) -> dict:
        """``{"mean", "ci_low", "ci_high"}``, the form :func:`weight_steering.rendering.interval_text` prints."""
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}

    def excludes_zero(self) -> bool | None:
        """Whether the 95% CI excludes 0 (None without an interval; False where the interval is NaN)."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return bool(self.ci_low > 0 or self.ci_high < 0)


class Effects:
    """The long table of one method's effects, keyed by ``(metric, arm)``, in the order rows were added.

    ``effects.get("ood_sets_per_token", "spread")`` is one row or None; ``effects.frame()`` the pandas table
    ``metric, arm, mean, ci_low, ci_high``; ``effects.to_json()`` / :meth:`from_json` its form in ``comparison.json``.
    """

    def __init__(self, rows: Iterable[Effect] = ()):
        self._rows: dict[tuple[str, str | None], Effect] = {}
        for row in rows:
            self._rows[(row.metric, row.arm)] = row

    def add(self, metric: str, arm: str | None, mean: float, ci_low: float | None = None, ci_high: float | None = None) -> None:
        """Add (or replace) one row.

        Raises:
            ValueError: an arm outside :data:`ARMS` and None.
        """
        if arm is not None and arm not in ARMS:
            raise ValueError(f"effect arm {arm!r} is not one of {ARMS} or None")
        self._rows[(metric, arm)] = Effect(metric, arm, float(mean), None if ci_low is None else float(ci_low),
                                           None if ci_high is None else float(ci_high))

    def add_interval(self, metric: str, arm: str | None, interval: dict | tuple) -> None:
        """Add a row from ``{"mean", "ci_low", "ci_high"}`` or ``(mean, ci_low, ci_high)``."""
        mean, low, high = (interval["mean"], interval["ci_low"], interval["ci_high"]) if isinstance(interval, dict) else interval
        self.add(metric, arm, mean, low, high)

    def extend(self, other: Effects) -> None:
        """Add every row of ``other`` (replacing rows with the same metric and arm)."""
        for row in other:
            self._rows[(row.metric, row.arm)] = row

    def get(self, metric: str, arm: str | None = None) -> Effect | None:
        return self._rows.get((metric, arm))

    def mean(self, metric: str, arm: str | None = None) -> float:
        """The row's mean, NaN where the method has no such row."""
        row = self.get(metric, arm)
        return float("nan") if row is None else row.mean

    def interval(self, metric: str, arm: str | None = None) -> dict | None:
        """The row as ``{"mean", "ci_low", "ci_high"}`` for printing, None where absent."""
        row = self.get(metric, arm)
        return None if row is None else row.interval()

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(metric for metric, _ in self._rows))

    def __contains__(self, key: tuple[str, str | None]) -> bool:
        return key in self._rows

    def __iter__(self) -> Iterator[Effect]:
        return iter(self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)

    def __eq__(self, other) -> bool:
        return isinstance(other, Effects) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Effects({len(self)} rows: {', '.join(self.metrics()[:6])}{', …' if len(self.metrics()) > 6 else ''})"

    def frame(self) -> pd.DataFrame:
        """``metric, arm, mean, ci_low, ci_high``, one row per effect."""
        return pd.DataFrame([asdict(row) for row in self], columns=["metric", "arm", "mean", "ci_low", "ci_high"])

    def to_json(self) -> list[dict]:
        return [asdict(row) for row in self]

    @classmethod
    def from_json(cls, data: list | dict) -> Effects:
        """The table from its JSON form: a list of rows (format 2), or the dict of format 1, whose keys were
        ``<metric>_<arm>`` (``ood_sets_per_token_spread``) or a bare metric (``si_k2``) and whose values were
        ``{"mean", "ci_low", "ci_high"}`` or a bare mean (``pmass_plus``).

        Raises:
            ValueError: a row without ``metric``/``arm``/``mean``, or an unknown arm.
        """
        table = cls()
        if isinstance(data, dict):
            for name, value in data.items():
                match = _ARM_SUFFIX.match(name)
                metric, arm = (match[1], match[2]) if match else (name, None)
                table.add(metric, arm, *((value["mean"], value["ci_low"], value["ci_high"]) if isinstance(value, dict) else (value,)))
            return table
        for row in data:
            missing = {"metric", "arm", "mean"} - set(row)
            if missing:
                raise ValueError(f"effect row {row} lacks {sorted(missing)}; the comparison.json is damaged, rerun `wsteer compare`")
            table.add(row["metric"], row["arm"], row["mean"], row.get("ci_low"), row.get("ci_high"))
        return table
