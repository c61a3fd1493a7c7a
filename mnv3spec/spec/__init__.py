"""Text and edits → :class:`~.resolve.Spec`: ``read`` (file → YAML with positions), ``variant``
(a chain of bases → a flat document and the variant's edits), ``edits`` (the one record of a
change, and the ``--set`` grammar), ``draft`` (the one implementation of edits), ``check`` (the
schema and row-name rules, in our words), ``rows`` and ``resolve`` (→ ``Spec``), ``load``
(``load_spec``, ``spec_errors``)."""
