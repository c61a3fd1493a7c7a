"""Spec → ``nn.Module``, what a compiled network costs (shapes, parameters, multiply-adds), and
how two specs differ."""
