"""Serving: a trained run's ``Predictor``; M-FALCON batched candidate scoring over a cached HSTU history (``mfalcon``)."""

from terarec.serve.mfalcon import HistoryCache, cache_history, mfalcon, score_candidates
from terarec.serve.predictor import Predictor

__all__ = ["HistoryCache", "Predictor", "cache_history", "mfalcon", "score_candidates"]
