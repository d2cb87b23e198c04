"""The main job's settings: :class:`RunConfig` and its size presets (default, smoke, paper, paper_2core)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..artifacts import check_number, check_output_folder
from ..core.adapters import TrainConfig
from ..core.data import GenerationConfig
from ..core.models import DEFAULT_MODEL, check_machine
from ..evaluation.judge import PAIR_JUDGES
from ..evaluation.scoring import DEFAULT_ALPHAS

# the format of run.json (its "format" field; absent means 1: runs from before the data sampler was recorded);
# older runs are upgraded in weight_steering.main_job.summary.load_runs, and nowhere else
RUN_FORMAT = 2


@dataclass(frozen=True)
class RunConfig:
    """Everything the main job needs. Sizes default to a ≤ 20-minute run on a 2-core CPU.

    Attributes:
        behavior: shipped behaviour name or path of a behaviour JSON.
        model: embedded name, local path or Hugging Face id.
        generation: data sampling settings (its ``seed`` is the data seed).
        train: adapter settings (its ``seed`` is the training seed).
        alphas: steering strengths to evaluate (must include 0 for the contrasts).
        dilemma_limit: evaluate only the first n DailyDilemmas dilemmas (None: all 252).
        eval_batch_size: rows per scoring batch.
        max_length: longest eval row in tokens (longer rows are cut from the left, counted).
        out: output root.
        force: recompute every stage.
        judge: judge every generated response for the behaviour (when the behaviour has a judge) and
            report the behaviour rate per sign and persona (:mod:`weight_steering.evaluation.judge`).
        filter_pairs: train only on pairs whose positive response the judge says shows the behaviour
            and whose negative one does not (Fierro & Roger 2025 §3); implies ``judge``.
        judge_threshold: the judge's threshold in its units (nats of log-odds; the metric's for ``pair_judge="metric"``),
            ``"labels"`` (calibrated on the behaviour's shipped hand labels; a behaviour without them uses
            ``"median"``, recorded as such), or ``"median"``.
        size_control: with ``filter_pairs``, train instead on as many pairs as the judge keeps, drawn at random (with the
            data seed) from all of them: the control that tells the filter's purity from its smaller size.
        pair_judge: what judges the data (:func:`weight_steering.evaluation.judge.pair_scorer`): ``"model"`` (the
            behaviour's Yes/No judge asked of the job's model) or ``"metric"`` (its judge-free ``generation_metric``).
        device, dtype: where and in which precision the model is loaded (:func:`weight_steering.core.models.load_model`;
            None: CUDA + bf16 when present, else CPU + fp32). Checked when the config is made, before any model work.
        ood_limit: score only the first n items of each OOD set (None: all); the ``smoke`` preset's 4 keep its CI tier short.
        thinking: render with a reasoning template's thinking on (:func:`weight_steering.core.chat.set_thinking`) in every
            stage; off by default, as the original system ran Qwen3. A template without a thinking switch refuses it.
        recipe: the preset the sizes came from (:data:`PRESETS`), recorded in dW's sidecar; not part of any stage key.
    """

    behavior: str = "sycophancy"
    model: str = DEFAULT_MODEL
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    dilemma_limit: int | None = None
    eval_batch_size: int = 32
    max_length: int = 1024
    out: str = "out"
    force: bool = False
    judge: bool = True
    filter_pairs: bool = False
    judge_threshold: float | str = "labels"
    pair_judge: str = "model"
    size_control: bool = False
    device: str | None = None
    dtype: str | None = None
    thinking: bool = False
    ood_limit: int | None = None
    recipe: str = "default"

    def __post_init__(self):
        check_number("run", "ood_limit", self.ood_limit, minimum=1, integer=True, optional=True)
        if not isinstance(self.thinking, bool):
            raise ValueError(f"run.thinking must be true or false; got {self.thinking!r}")
        check_number("run", "dilemma_limit", self.dilemma_limit, minimum=1, integer=True, optional=True)
        check_number("run", "eval_batch_size", self.eval_batch_size, minimum=1, integer=True)
        check_number("run", "max_length", self.max_length, minimum=8, integer=True)
        for alpha in self.alphas:
            check_number("run", "alphas", alpha)
        if self.size_control and not self.filter_pairs:
            raise ValueError("run.size_control draws as many random pairs as the pair judge keeps, so it needs filter_pairs; "
                             "turn on filter_pairs (--filter-pairs) or drop size_control (--size-control)")
        if self.pair_judge not in PAIR_JUDGES:
            raise ValueError(f"run.pair_judge must be one of {', '.join(PAIR_JUDGES)}; got {self.pair_judge!r}")
        if self.judge_threshold not in ("median", "labels"):
            check_number("run", "judge_threshold", self.judge_threshold)
        check_output_folder(self.out)
        check_machine(self.device, self.dtype)


PRESETS: dict[str, dict] = {
    # ≤ 20 minutes on 2 CPU cores (measured in docs/RESULTS.md).
    "default": {},
    # A few minutes on CPU: the CI tier of the real-model test.
    "smoke": {"generation": {"n_prompts": 6, "n_personas": 2, "n_samples": 2, "max_new_tokens": 32},
              "alphas": (-1.0, 0.0, 1.0), "dilemma_limit": 24, "ood_limit": 4},
    # The paper's recipe (Fierro & Roger 2025 §3): LoRA r 32 / lora_alpha 16 on every layer and every linear module
    # of the block, 5% validation, paper-sized data (24 × 5 × 10 = 1,200 pairs on sycophancy) of 256-token replies;
    # meant for a GPU. The paper also sweeps 2-3 learning rates and stops early on the validation loss; this keeps 2e-4.
    "paper": {"generation": {"n_samples": 10, "max_new_tokens": 256},
              "train": {"layer_fraction": (0.0, 1.0), "lora_alpha": 16, "validation_fraction": 0.05, "max_length": 512}},
    # The same recipe at the size 2 CPU cores allow: ≥ 500 pairs per sign (24 × 3 × 7 = 504 on tone and upbeat)
    # of 128-token replies, about half the paper's data and replies.
    "paper_2core": {"generation": {"n_samples": 7, "max_new_tokens": 128},
                    "train": {"layer_fraction": (0.0, 1.0), "lora_alpha": 16, "validation_fraction": 0.05, "max_length": 320}},
}


def preset_config(name: str = "default", **overrides) -> RunConfig:
    """A :class:`RunConfig` from a preset (``default``, ``smoke``, ``paper``) plus field overrides.

    ``overrides`` may set top-level fields or ``generation``/``train`` dicts of sub-fields.

    Raises:
        ValueError: unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    merged: dict = {}
    for source in (PRESETS[name], overrides):
        for key, value in source.items():
            if key in ("generation", "train"):
                merged.setdefault(key, {}).update(value)
            elif value is not None:
                merged[key] = value
    config = RunConfig(**{"recipe": name} | {k: v for k, v in merged.items() if k not in ("generation", "train")})
    return replace(
        config,
        generation=replace(config.generation, **merged.get("generation", {})),
        train=replace(config.train, **merged.get("train", {})),
    )
