"""Benchmarks that print numbers, each side by side with its baseline in the same run.

One module per target (``synthesis``, ``loader``, ``train``, ``infer``), each a typed keyword
function; :mod:`maskdet.bench.common` holds what they share. ``python -m maskdet bench TARGET``
runs them (the command line is the only place that reads options).
"""
