"""Exploration: grids of spec variants trained, timed and compared (sweep, its report)."""
