"""The runners over a compiled network: train, evaluate, infer, latency, export, diff."""
