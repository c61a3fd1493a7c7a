"""What training and deployment both stand on: the run folder, evaluation of a model on labelled
batches, and where a network runs (device, precision, threads, ranks)."""
