"""Serving: load a finished run and answer requests.

Algorithms live in the layers, not here: M-FALCON's cached history and appended candidates are
an option of the HSTU stack (``HSTUStack.cache_history`` / ``score_candidates`` in
``terarec.layers.hstu``).
"""

from terarec.serve.predictor import Predictor

__all__ = ["Predictor"]
