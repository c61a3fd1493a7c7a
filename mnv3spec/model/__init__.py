"""Spec → ``nn.Module``, and what a compiled network costs (shapes, parameters, multiply-adds)."""
