"""Text → :class:`Spec`: reading, validating and resolving a spec file."""
