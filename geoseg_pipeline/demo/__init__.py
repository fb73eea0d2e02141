"""Synthetic demo data: Sentinel-2-like land-cover scenes with reference labels.

The scenes are generated, not downloaded, so demos, tests and benchmarks can make inputs of
any size on the fly (see :mod:`geoseg_pipeline.demo.scenes`).
"""
