"""Weights in and out: our safetensors checkpoints, torchvision's and timm's MobileNets, and specs
written from a timm model."""
