"""Re-key the committed archives' dW stages from the dW's bytes to its inputs (run once).

Until this version the comparison's dW stages (calibration, audit, evaluation, generations) and the monitoring
experiment's cells were keyed on the SHA-256 of the dW's bytes, and two activation methods' stages on floats measured
from the model (cos(CAA, PCA) and d′ per layer). Those differ across CPU kernel paths (AVX2, AVX-512,
``ATEN_CPU_CAPABILITY=default``; docs/engineering.md §1), so a committed archive resumed on another CPU recomputed them.
They are now keyed on inputs (:func:`weight_steering.core.diff.dw_identity`, :func:`weight_steering.core.methods.keyed_spec`). This script moves the archived
stages to their new keys without recomputing anything:

1. For each archived comparison (behaviour, seed) it restores the archive and retrains the dW from the archived data
   (the same inputs: data, training config, base weights).
2. It runs the comparison. Every stage must be found in the archive, under its key or else by its content: the one
   archived folder of that method's stage whose strengths α are the ones the archived ``comparison.json`` records for
   that method at this seed (exactly one, or the script stops). Found by content are dW's stages (keyed on its bytes
   before) and those of PCA on the slice and CAA at the best layer (keyed on measured floats before,
   :func:`weight_steering.core.methods.keyed_spec`). A stage found by content is adopted under its new key: the same
   files, the marker's key rewritten. Any stage that would be computed stops the script (nothing is recomputed).
3. The ``comparison.json`` written from the adopted stages must hold every recorded field with its recorded value
   (a result written by an older version lacks fields added since; the measured diagnostics, recomputed here, differ
   in their last bits and are left out of the check), so every adopted stage is the one the recorded result was made
   from. The recorded result files are kept as they were; the old folders are removed from the
   archive.
4. The size of the bytes' difference is measured, not assumed: p95 KL at the first α of dW's archived calibration,
   measured again with the retrained dW, against the archived value.
5. The monitoring cells (fine-tunes against the sycophancy seed-1 dW, the honesty seed-0 dW as the unrelated null)
   are adopted the same way, one archived cell per (behaviour share, seed); the result recomputed from them must
   equal ``docs/monitor/monitoring.json`` (seeds 3–5) and ``monitoring_seeds012.json`` (seeds 0–2).

    .venv/bin/python reproduce/rekey_archives.py [behaviour[:seed] ...]

The default is every archived comparison, then the monitoring cells (when sycophancy:1 and honesty:0 are among the
comparisons re-keyed), then the seven-method runs of tone and upbeat at seed 0 (their extra methods' stages are found
as the only archived folder of each stage; the comparison.md they give must equal ``docs/compare/<b>_seed0_seven_methods.md``).
The dWs are written under ``out/``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from dataclasses import fields
from pathlib import Path

from weight_steering import stage_cache

from weight_steering.comparison import run as compare
from weight_steering.comparison.result import ComparisonResult

from weight_steering.monitoring import run as monitor

from weight_steering.main_job import stages as pipeline
from weight_steering.artifacts import read_json, read_jsonl, write_json
from weight_steering.evaluation.calibrate import kl_from_base
from weight_steering.core.data import sampler_settings
from weight_steering.core.diff import load_dw
from weight_steering.evaluation.datasets import load_neutral, neutral_split
from weight_steering.comparison.methods import keyed_spec
from weight_steering.core.models import load_model
from weight_steering.main_job.stages import pairs_of
from weight_steering.main_job.config import preset_config

REPO = Path(__file__).resolve().parents[1]
COMPARE_ARCHIVE = Path("docs/compare/archive")  # relative, as recorded in the archived configs
MONITOR = REPO / "docs" / "monitor"
MODEL = "smollm2-135m-instruct"
SAMPLERS = {"sycophancy": "transformers", "honesty": "transformers"}  # as reproduce/comparison.sh drew their data; tone, upbeat: cached
JOB_STAGES_COMPUTED = ("train θ⁺", "train θ⁻", "diff dW")  # the adapters and dW are not archived: retrained
run_stage = stage_cache.run_stage  # the real one, before any patch


class Adopter:
    """A stand-in for ``run_stage``: a finished stage is reused, a stage that ``find(name)`` locates under its old key
    is adopted under the new one, and any other stage stops the script (nothing is recomputed)."""

    def __init__(self, find, allowed_to_compute: tuple[str, ...] = ()):
        self.find, self.allowed = find, allowed_to_compute
        self.adopted: list[tuple[Path, Path]] = []

    def __call__(self, name, directory, key, compute, **kwargs):
        directory = Path(directory)
        if not stage_cache.stage_is_finished(directory, key) and name not in self.allowed:
            old = self.find(name)
            if old is None:
                raise SystemExit(f"stage {name!r} ({directory.name}) is neither archived under its key nor found by its "
                                 "content; nothing was removed from the archive")
            shutil.copytree(old, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
            write_json(directory / "stage.json", {**read_json(old / "stage.json"), "key": key})
            self.adopted.append((old, directory))
        return run_stage(name, directory, key, compute, **kwargs)


def contains(new, old) -> bool:
    """Whether ``new`` holds every field of ``old`` with the same value (fields added since ``old`` was written may be
    there too; NaN equals NaN)."""
    if isinstance(old, dict):
        return isinstance(new, dict) and all(k in new and contains(new[k], v) for k, v in old.items())
    if isinstance(old, list):
        return isinstance(new, list) and len(new) == len(old) and all(contains(a, b) for a, b in zip(new, old))
    return new == old or (isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new))


def without_measured(result: dict) -> dict:
    """A comparison result without the methods' measured diagnostics (cos(CAA, PCA), d′ per layer), which are
    recomputed on this machine and differ from the recorded ones in their last bits (they are not in any key)."""
    return {**result, "methods": [{**m, "spec": keyed_spec(m.get("spec", {}))} for m in result["methods"]]}


def _alphas(path: Path) -> set[float]:
    return {row["alpha"] for row in read_jsonl(path)}


def stage_by_content(root: Path, recorded: dict):
    """``stage name -> the one finished folder under root`` holding that method's stage with the α the comparison
    recorded for it (calibration and audit per sign, evaluation and generations at both), or None for other stages."""
    arms = {m["key"]: (m["plus"]["alpha"], m["minus"]["alpha"]) for m in recorded["methods"]}
    rules = {}
    for key, (plus, minus) in arms.items():
        for label, alpha in (("plus", plus), ("minus", minus)):
            rules[f"calibrate {key} {label}"] = (f"calibrate-{key}-{label}-", "calibration.json", alpha)
            rules[f"audit KL {key} {label}"] = (f"audit-{key}-{label}-", "audit.json", alpha)
        rules[f"evaluate {key}"] = (f"eval-{key}-", "records.jsonl", {minus, plus})
        rules[f"generate {key}"] = (f"gen-{key}-", "generations.jsonl", {minus, plus})

    def holds(folder: Path, file: str, wanted) -> bool:
        if file.endswith(".jsonl"):
            return _alphas(folder / file) == wanted
        return read_json(folder / file)["alpha"] == wanted

    def find(name: str) -> Path | None:
        if name not in rules:
            return None
        prefix, file, wanted = rules[name]
        found = [d for d in sorted(root.glob(prefix + "*")) if stage_cache.stage_is_finished(d) and holds(d, file, wanted)]
        if len(found) != 1:
            raise SystemExit(f"{name}: {len(found)} archived folders hold the recorded α ({[d.name for d in found]}); expected one")
        return found[0]

    return find


def rekey_comparison(behavior: str, seed: int, loaded) -> Path:
    """Steps 1–4 for one archived comparison; returns its dW folder."""
    archived = REPO / COMPARE_ARCHIVE / MODEL / behavior / "compare"
    result_dir = archived / f"lora-seed{seed}"
    result_file = result_dir / "comparison.json"
    recorded = read_json(result_file)
    before = {path: path.read_bytes() for path in result_dir.iterdir() if path.is_file()}
    names = {f.name for f in fields(compare.CompareConfig)}
    config = compare.CompareConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded["config"].items() if k in names})
    root = Path(config.out) / "compare" / behavior / MODEL
    adopter = Adopter(stage_by_content(root, recorded), allowed_to_compute=("comparison",))
    compare.run_stage, pipeline.run_stage = adopter, Adopter(lambda name: None, allowed_to_compute=JOB_STAGES_COMPUTED)
    try:
        result = compare.run_comparison(config, loaded, recorded["command"],
                                        preset_config(generation=sampler_settings(SAMPLERS.get(behavior, "cached"))))
    finally:
        compare.run_stage, pipeline.run_stage = run_stage, run_stage
    upgraded = ComparisonResult.from_json(recorded).to_json()  # the recorded result in the format the run writes now
    if not contains(without_measured(read_json(result_file)), without_measured(upgraded)):
        raise SystemExit(f"{result_file} changed; restore it with git checkout and investigate (nothing was removed)")
    for path, content in before.items():  # a result written by an older version gains fields now; keep it as recorded
        path.write_bytes(content)
    for old, new in adopter.adopted:
        if (archived / new.name / "stage.json").exists():
            shutil.rmtree(archived / old.name)
    # step 4: the retrained dW's bytes against the archived dW's effect
    model, tokenizer = loaded
    dw = load_dw(result.dw_dir, model)
    alpha, archived_p95 = next(m for m in recorded["methods"] if m["key"] == "dW")["plus"]["history"][0]  # its first measurement
    prompts = [p["instruction"] for p in neutral_split(load_neutral())[0]][: config.prompt_limit]
    measured = kl_from_base(model, tokenizer, dw, alpha, prompts, config.n_tokens).p95
    line = {"behavior": behavior, "seed": seed, "adopted": len(adopter.adopted), "alpha": alpha, "archived_p95": archived_p95,
            "retrained_p95": measured, "relative_difference": abs(measured - archived_p95) / archived_p95}
    print(json.dumps(line), flush=True)
    return result.dw_dir


def rekey_monitoring(loaded, dw_dirs: dict[tuple[str, int], Path]) -> None:
    """Step 5 (``SYC_SEED=1 reproduce/monitoring.sh`` made the cells, ``--seeds 0,1,2`` and then ``3,4,5``)."""
    model, tokenizer = loaded
    dw_dir, unrelated = dw_dirs[("sycophancy", 1)], load_dw(dw_dirs[("honesty", 0)])
    archive, root = MONITOR / "archive", Path("out") / "monitor" / dw_dir.name
    label = str(dw_dirs[("honesty", 0)])  # the unrelated dW's label in a new cell (the CLI's path)

    def find(name: str) -> Path | None:  # "monitor f=<fraction> s=<seed>": one archived cell per (fraction, seed)
        fraction, seed = (part.split("=")[1] for part in name.split()[1:])
        found = list(archive.glob(f"cell-f{fraction}-s{seed}-*"))
        return found[0] if len(found) == 1 else None

    for seeds, recorded in (((3, 4, 5), "monitoring.json"), ((0, 1, 2), "monitoring_seeds012.json")):
        adopter = Adopter(find)
        stage_cache.run_stage = adopter
        try:
            result = monitor.monitoring_experiment(model, tokenizer, pairs_of(dw_dir), load_neutral(), load_dw(dw_dir), {label: unrelated},
                                                   (0.0, 0.1, 0.25, 0.5, 1.0), seeds, 100, root=root)
        finally:
            stage_cache.run_stage = run_stage
        same = json.loads(json.dumps(result)) == read_json(MONITOR / recorded)  # adopted cells keep their recorded labels
        if not same:
            raise SystemExit(f"the monitoring result from the adopted cells differs from docs/monitor/{recorded}; nothing was removed")
        stage_cache.copy_finished_stages(root, archive, ("cell-",))
        for old, new in adopter.adopted:
            if (archive / new.name / "stage.json").exists():
                shutil.rmtree(old)
        print(json.dumps({"monitoring": recorded, "adopted": len(adopter.adopted), "result_equal": same}), flush=True)


SEVEN_METHODS = ("dW", "persona", "engineered", "caa_slice", "pca_slice", "caa_all", "caa_increments")


def rekey_seven_methods(behavior: str, loaded) -> None:
    """The seven-method run of ``behavior`` at seed 0 (reproduce/comparison_followable.sh): its four recorded methods'
    stages were re-keyed by :func:`rekey_comparison`; the three others ran at seed 0 only, so each of their stages is the
    only archived folder of its kind. The comparison.md they give must equal the committed seven-method table."""
    archived = REPO / COMPARE_ARCHIVE / MODEL / behavior / "compare"
    result_dir = archived / "lora-seed0"
    recorded = read_json(result_dir / "comparison.json")
    before = {path: path.read_bytes() for path in result_dir.iterdir() if path.is_file()}
    names = {f.name for f in fields(compare.CompareConfig)}
    config = compare.CompareConfig(**{**{k: tuple(v) if isinstance(v, list) else v for k, v in recorded["config"].items() if k in names},
                                      "methods": SEVEN_METHODS})
    command = recorded["command"].replace("--methods dW,persona,engineered,caa_slice", "--methods " + ",".join(SEVEN_METHODS))
    root = Path(config.out) / "compare" / behavior / MODEL
    recorded_keys = {m["key"] for m in recorded["methods"]}

    def only_folder(name: str) -> Path | None:
        words = name.split()  # "calibrate <key> <sign>", "audit KL <key> <sign>", "evaluate <key>", "generate <key>"
        key = words[-2] if words[0] in ("calibrate", "audit") else words[-1]
        prefix = {"calibrate": f"calibrate-{key}-{words[-1]}-", "audit": f"audit-{key}-{words[-1]}-", "evaluate": f"eval-{key}-",
                  "generate": f"gen-{key}-"}.get(words[0])
        if prefix is None or key in recorded_keys:
            return None
        found = [d for d in root.glob(prefix + "*") if stage_cache.stage_is_finished(d)]
        return found[0] if len(found) == 1 else None

    adopter = Adopter(only_folder, allowed_to_compute=("comparison",))
    compare.run_stage, pipeline.run_stage = adopter, Adopter(lambda name: None, allowed_to_compute=JOB_STAGES_COMPUTED)
    try:
        compare.run_comparison(config, loaded, command, preset_config(generation=sampler_settings(SAMPLERS.get(behavior, "cached"))))
    finally:
        compare.run_stage, pipeline.run_stage = run_stage, run_stage
    made = (result_dir / "comparison.md").read_text(encoding="utf-8")
    for path, content in before.items():
        path.write_bytes(content)
    if made != (REPO / "docs" / "compare" / f"{behavior}_seed0_seven_methods.md").read_text(encoding="utf-8"):
        raise SystemExit(f"{behavior}: the seven-method table made from the archive differs from the committed one; nothing was removed")
    for old, new in adopter.adopted:
        if (archived / new.name / "stage.json").exists():
            shutil.rmtree(archived / old.name)
    print(json.dumps({"behavior": behavior, "seven_methods": True, "adopted": len(adopter.adopted), "table_equal": True}), flush=True)


def main(selection: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING)
    wanted = [(b, int(s)) for b, _, s in (x.partition(":") for x in selection if ":" in x)]
    behaviors = [x for x in selection if ":" not in x] or ([] if wanted else ["sycophancy", "honesty", "tone", "upbeat"])
    wanted += [(b, s) for b in behaviors for s in (0, 1, 2)]
    loaded = load_model()
    dw_dirs = {(b, s): rekey_comparison(b, s, loaded) for b, s in wanted}
    if {("sycophancy", 1), ("honesty", 0)} <= set(dw_dirs):
        rekey_monitoring(loaded, dw_dirs)
    for behavior in ("tone", "upbeat"):
        if (behavior, 0) in dw_dirs:
            rekey_seven_methods(behavior, loaded)


if __name__ == "__main__":
    main(sys.argv[1:])
