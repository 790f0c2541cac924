"""Training: the Ray Train worker (data, trainer, checkpoints, history) and the baselines a run reports."""
