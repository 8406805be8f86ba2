"""Serving: M-FALCON batched candidate scoring over a cached HSTU history (``mfalcon``)."""

from terarec.serve.mfalcon import HistoryCache, cache_history, mfalcon, score_candidates

__all__ = ["HistoryCache", "cache_history", "mfalcon", "score_candidates"]
