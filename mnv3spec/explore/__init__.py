"""Exploration: grids of spec variants trained, timed and compared (sweep, its report)."""

MAX_VARIANTS = 256  # the default bound of sweep --max-variants: a day of tiny trainings on a GPU
