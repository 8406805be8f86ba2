"""Serving: load a finished run and answer requests; export it as a bundle and serve it over HTTP.

Algorithms live in the layers, not here: M-FALCON's cached history and appended candidates are
an option of the HSTU stack (``HSTUStack.cache_history`` / ``score_candidates`` in
``terarec.layers.hstu``). ``bundle`` exports and verifies bundles, ``recommender`` answers batches
of two-stage queries, ``server`` is the FastAPI app (docs/serving.md).
"""

from terarec.serve.predictor import Predictor

__all__ = ["Predictor"]
