"""Reduced main job on the embedded SmolLM2-135M-Instruct (marker ``real``; a few minutes on 2 CPU cores)."""

import pytest

pytestmark = pytest.mark.real


def test_reduced_main_job_on_embedded_model(tmp_path):
    from weight_steering.pipeline import preset_config, run_main_job

    result = run_main_job(preset_config("smoke", out=str(tmp_path)), command="pytest -m real")
    contrasts = {(c["metric"], c["contrast"]): c for c in result["summary"]["contrasts"]}
    spread = contrasts[("sycophancy", "α=+1 − α=-1")]
    # The method works: steering toward the sycophantic persona raises agreement on held-out claims.
    assert spread["mean"] > 0 and spread["ci_low"] > 0, spread
    per_alpha = [r for r in result["summary"]["per_alpha"] if r["metric"] == "sycophancy"]
    assert min(r["pmass_mean"] for r in per_alpha) > 0.5  # the answer format survives |α| = 1
    assert result["report"].exists() and result["dw"].metadata["n_tensors"] == 105  # 15 layers × 7 projections
