"""Models and prediction (imports torch). Knows nothing of Ray: the runtime wraps
:class:`~geoseg_pipeline.inference.tile_executor.TileExecutor` in actors.

Import the submodules directly (``loading``, ``predictor``, ``tile_executor``); this package
does not import them eagerly so that torch-free code can use its siblings.
"""
