"""``adapt``: NetAdapt (Yang et al. 2018, as MobileNetV3 §4.2 uses it) over spec edits.

A proposal is an edit of rows by name (:mod:`.moves`); its latency is measured whole on the
runtime that ships it (:mod:`.timing`); each proposal is fine-tuned from its parent's weights
and scored on held-out training images (:mod:`.trainings`); the search keeps the best
ΔAccuracy / |ΔLatency| until the target is met (:mod:`.search`: what it calls in
:mod:`.proposal`, each step's proposals sized in :mod:`.sizing` and its choice measured whole in
:mod:`.choice`). The folder's own files are written and read by :mod:`.folder` and
:mod:`.trace`; :mod:`.run` puts them together.
"""
