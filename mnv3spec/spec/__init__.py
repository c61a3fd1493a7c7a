"""Text → :class:`~.resolve.Spec`: ``read`` (file → YAML with positions), ``variant`` (a chain
of bases → a flat document), ``overrides`` (the ``--set`` grammar), ``check`` (the schema and
row-name rules, in our words), ``rows`` and ``resolve`` (→ ``Spec``), ``load`` (``load_spec``,
``spec_errors``)."""
