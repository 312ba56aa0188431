"""The shared lower layer: what both systems (``ldp``, ``relevance``), the index and the
ops need, and nothing that knows about any one of them.

- :mod:`~noiseforge._common.files`: atomic writes, figures.
- :mod:`~noiseforge._common.paths`: the cache folder.
- :mod:`~noiseforge._common.embedding_cache`: the disk cache of text embeddings.
- :mod:`~noiseforge._common.validation`: argument checks with errors that name the fix.
- :mod:`~noiseforge._common.argtypes`: command-line value types and the options
  several commands share.
- :mod:`~noiseforge._common.runtime`: threads for native kernels, the fork guard,
  ``first_nonfinite``.
- :mod:`~noiseforge._common.vectors`: similarity metrics, id arrays, exclusion lists.

Nothing here imports ``noiseforge.ops``, ``noiseforge.index``, ``noiseforge.ldp`` or
``noiseforge.relevance``; they import from here.
"""
