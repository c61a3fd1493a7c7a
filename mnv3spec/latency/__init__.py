"""Latency: networks timed per width, device and backend (:mod:`.measure`, over the runtimes of
:mod:`mnv3spec.deploy.runtimes` and PyTorch's own ways, :mod:`.backends`), and predicted from a
look-up table of timed rows (:mod:`.predict`)."""
