"""A comparison's result, typed: what :func:`~weight_steering.comparison.run.run_comparison` returns and writes as
``comparison.json``, and the one reader of that file, which upgrades older formats.

Formats of ``comparison.json`` (the ``format`` field; absent means 1):

* 1: a method's effects were a dict keyed ``<metric>_<arm>`` (``ood_sets_per_token_spread``); results from before
  the run recorded the device, the OOD sets or the judge lack those fields.
* 2: effects are a long table (:class:`~weight_steering.evaluation.effect_table.Effects`), one row per metric and arm.

Every older format is upgraded in :func:`read_comparison`, and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..artifacts import read_json
from ..evaluation.effect_table import Effects

FORMAT_VERSION = 2


class ComparisonFormatError(ValueError):
    """A ``comparison.json`` this version cannot read (a newer format, or fields missing)."""


@dataclass
class Arm:
    """One sign of a method: its strength calibrated to the KL budget and KL re-measured there on the audit split.

    ``p95``/``mean``/``max``: KL(steered ‖ base) on the calibration prompts at ``alpha`` (nats); ``audit_*``: the same on
    the held-apart audit prompts, with 95% CIs over prompts. ``target``/``tolerance``/``converged`` are None for prompt
    methods, which are not calibrated (one setting per sign, its KL reported). ``history``: ``[α, p95]`` per
    measurement; ``seconds``: the calibration's wall time.
    """

    alpha: float
    p95: float
    mean: float
    max: float
    target: float | None
    tolerance: float | None
    converged: bool | None
    iterations: int
    n_forward_passes: int
    history: list
    message: str | None
    seconds: float
    n_calibration_prompts: int
    audit_mean: float
    audit_mean_ci_low: float
    audit_mean_ci_high: float
    audit_p95: float
    audit_p95_ci_low: float
    audit_p95_ci_high: float
    audit_max: float
    audit_n_positions: int
    n_audit_prompts: int


@dataclass
class MethodResult:
    """One steering method at the budget: ``key`` (its registry key), ``name`` (for tables), both arms, its effects,
    the effect-vs-KL ``curve`` (``fraction``, ``alpha``, ``p95``, ``ood_target`` per point), the scoring's wall time
    and ``spec`` (layers, rank, aggregator, reading, CAA/PCA direction agreement, where the method has them)."""

    key: str
    name: str
    continuous: bool
    plus: Arm
    minus: Arm
    effects: Effects
    curve: list[dict]
    eval_seconds: float
    spec: dict

    def arm(self, label: str) -> Arm:
        """``"plus"`` or ``"minus"``."""
        return {"plus": self.plus, "minus": self.minus}[label]


@dataclass
class ComparisonResult:
    """Every method of one comparison (behaviour, model, seed, KL budget) on identical rows.

    ``config`` is the :class:`~weight_steering.comparison.run.CompareConfig` as recorded; ``ratios`` dW's spread over each
    other method's (:func:`~weight_steering.comparison.ratios.generalisation_ratios`). ``path`` (the result folder) and
    ``dw_dir`` (the dW's stage folder) are where this run put them; they are not written to the file.
    """

    behavior: str
    model: str
    config: dict
    command: str
    n_rows: int
    n_dilemma_rows: int
    n_calibration_prompts: int
    n_audit_prompts: int
    ood_target: dict
    behavior_label: str
    methods: list[MethodResult]
    ratios: list[dict]
    device: str = "cpu"
    dtype: str = "float32"
    ood_sets: list[dict] = field(default_factory=list)
    ood_measure: str = "ood_target"
    generation_metric: str | None = None
    n_generation_prompts: int = 0
    judge_threshold: float | None = None
    judge_agreement: dict | None = None
    format: int = FORMAT_VERSION
    path: Path | None = None
    dw_dir: Path | None = None

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def target(self) -> float:
        """The KL budget, p95 KL in nats."""
        return float(self.config["target"])

    def method(self, key: str) -> MethodResult | None:
        return next((m for m in self.methods if m.key == key), None)

    def to_json(self) -> dict:
        """The ``comparison.json`` form (format :data:`FORMAT_VERSION`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("methods", "path", "dw_dir")}
        out["methods"] = [{**{f.name: getattr(m, f.name) for f in fields(m) if f.name not in ("plus", "minus", "effects")},
                           "plus": asdict(m.plus), "minus": asdict(m.minus), "effects": m.effects.to_json()} for m in self.methods]
        return out

    @classmethod
    def from_json(cls, data: dict, source: str = "comparison.json") -> ComparisonResult:
        """The result from its JSON form, upgrading format 1 (see the module docstring).

        Raises:
            ComparisonFormatError: a format newer than :data:`FORMAT_VERSION`, or a required field missing.
        """
        version = data.get("format", 1)
        if version > FORMAT_VERSION:
            raise ComparisonFormatError(f"{source} has format {version}; this version reads up to {FORMAT_VERSION}: upgrade weight-steering")
        unknown = set(data) - ({f.name for f in fields(cls)} - {"path", "dw_dir"})
        if unknown:
            raise ComparisonFormatError(f"{source} has fields this version does not know ({', '.join(sorted(unknown))}): upgrade weight-steering")
        try:
            methods = [MethodResult(**{**{k: v for k, v in m.items() if k not in ("plus", "minus", "effects")},
                                       "plus": Arm(**m["plus"]), "minus": Arm(**m["minus"]), "effects": Effects.from_json(m["effects"])})
                       for m in data["methods"]]
            return cls(**{**data, "methods": methods, "format": FORMAT_VERSION})
        except (KeyError, TypeError) as err:
            raise ComparisonFormatError(f"{source} is not a comparison result this version can read ({err}); "
                                        "rerun `wsteer compare` to remake it") from err


def read_comparison(path: str | Path) -> ComparisonResult:
    """Read a ``comparison.json`` (any format), or the one in a result folder.

    Raises:
        FileNotFoundError: no such file. ComparisonFormatError: see :meth:`ComparisonResult.from_json`.
    """
    path = Path(path)
    path = path / "comparison.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no comparison.json at {path}; give a folder `wsteer compare` wrote")
    result = ComparisonResult.from_json(read_json(path), str(path))
    result.path = path.parent
    return result
