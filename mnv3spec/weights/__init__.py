"""Weights in and out: our safetensors checkpoints, and torchvision's MobileNets."""
