"""Deployment: a trained network out to its runtimes' files (export, int8) and those files run
(eval, infer), over one registry of runtimes (:mod:`.runtimes`)."""
