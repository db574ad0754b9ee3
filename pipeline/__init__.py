"""Stage entry points (``python -m pipeline.<stage>``, ``hashaudit <stage>``) and the one module
that reads and writes every on-disk format (``pipeline.artifacts``)."""
