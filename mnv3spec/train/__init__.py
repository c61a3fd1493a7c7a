"""Training: a spec and a ``TrainConfig`` in, a run folder of weights and metrics out (plan, loop,
resume)."""
