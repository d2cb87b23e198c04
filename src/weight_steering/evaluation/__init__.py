"""Evaluation on one footing for every method: rows (held-out, OOD, dilemmas, vignettes), scoring (logratio, pmass),
KL calibration, effects and SI, generations, and the statistics every study aggregates seeds with."""
