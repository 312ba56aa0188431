"""Triton kernels of noiseforge (installed as ``noiseforge.kernels``).

Importing this package imports Triton; the backend registry imports it lazily
and reports Triton as unavailable when it is missing.
"""
