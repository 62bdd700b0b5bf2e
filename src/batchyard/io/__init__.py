"""Inputs and outputs: formats in (``inputs``), results, summaries and manifests out (``outputs``, ``manifest``).

``inputs.open_input`` streams CSV, JSONL, JSON, text lines, directories, globs and fsspec URIs, checked
against a processor's parameter model; ``outputs.write_results`` streams JSON, CSV or JSONL from a store.
"""
