"""Deployment: a trained network out to files and runtimes (export, int8, latency, inference,
eval)."""
