"""Datasets (CIFAR, image folders, synthetic) as uint8 tensors, their batches and augmentation."""
