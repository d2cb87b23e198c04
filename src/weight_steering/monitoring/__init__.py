"""Can dW monitor a fine-tune? cos(fine-tune delta, dW) against random-direction and unrelated-dW nulls."""

from .run import MonitorError, finetune_delta, monitor, monitoring_experiment, run_monitoring_experiment

__all__ = ["MonitorError", "finetune_delta", "monitor", "monitoring_experiment", "run_monitoring_experiment"]
