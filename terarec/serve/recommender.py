"""Two-stage recommendation over a loaded bundle, for batches of queries: retrieval then ranking.

Stage 1 (retrieval part): the sequence model's unit user vectors for every query of the batch at
once, searched in the bundle's faiss index. Stage 2 (ranking part): an HSTU ranking model scores a
batch's candidates with M-FALCON over their histories (``HSTURanking.score_candidates``: the
histories' keys and values computed once, each user's candidates appended in micro-batches), or a CTR model (Wukong...)
scores one row per user x candidate, the rows of the whole batch in one call.

Rules for ids the bundle does not know (each counted in ``unknown``):

* history items unknown to the retrieval catalogue are kept and read as the default row, as the
  model read unseen ids in training;
* candidates (given, or found by retrieval) unknown to the ranking model's item vocabulary are
  dropped before ranking;
* item features of candidates (and of history events, for HSTU ranking) come from the bundle's
  catalogue; an item missing there gets null features (the default row).

Example:
    >>> recommender = Recommender(load_bundle("bundles/demo"))  # doctest: +SKIP
    >>> recommender.recommend([Query(items=np.array([3, 17, 5]), k=5)])[0].items  # doctest: +SKIP
    [42, 7, 101, 9, 64]
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from terarec.data import schema
from terarec.data.history import history_column
from terarec.data.ranking import RankingColumns
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.features.hashing import hash_array
from terarec.serve.bundle import Bundle, BundlePart
from terarec.train.tasks import RankingTask


class QueryError(ValueError):
    """A query the bundle cannot answer (the client's to fix): ``field`` names the request field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass
class Query:
    """One user's request: a history (raw item ids, oldest first) and what to return.

    Args:
        items: (n,) raw item ids of the history.
        timestamps: (n,) their times (default 0, 1, ...).
        actions: action name -> (n,) values of each history event (HSTU ranking; default 0).
        k: items to return.
        exclude_seen: drop items of the history from the answer.
        candidates: raw item ids to rank instead of retrieving them.
        user_id: the raw user id (CTR rows read it when the model has a ``user_id`` feature).
        context: column -> value for the rest of a ranking model's inputs (user features...).
        request_time: the candidates' time (default: the last history timestamp).
    """

    items: np.ndarray
    timestamps: np.ndarray | None = None
    actions: dict[str, list[float]] = field(default_factory=dict)
    k: int = 10
    exclude_seen: bool = True
    candidates: np.ndarray | None = None
    user_id: int | None = None
    context: dict[str, Any] = field(default_factory=dict)
    request_time: int | None = None


@dataclass
class Answer:
    """Ranked raw item ids, their ranking scores, every task's scores, and milliseconds per stage
    (of the batch the query was answered in)."""

    items: list[int]
    scores: list[float]
    task_scores: dict[str, list[float]] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)


class Recommender:
    """Answers batches of ``Query`` with a bundle (see the module docstring).

    Args:
        bundle: a loaded bundle (``load_bundle``).
        num_candidates: items retrieved for stage 2 (with a ranking part).
        rank_by: the ranking part's output ordering the answer (default its first label).
        micro_batch: M-FALCON candidates per user and layer call (``HSTUStack.score_candidates``):
            it bounds the (users, heads, b, n) attention tensors; fewer, larger calls are faster.
    """

    def __init__(self, bundle: Bundle, num_candidates: int = 256, rank_by: str | None = None,
                 micro_batch: int = 256) -> None:
        self.bundle = bundle
        self.num_candidates = num_candidates
        self.micro_batch = micro_batch
        self._per_thread = threading.local()
        ranking = bundle.ranking
        self.outputs = ranking.predictor.outputs if ranking else []
        self.rank_by = rank_by or (self.outputs[0] if self.outputs else None)
        if ranking and self.rank_by not in self.outputs:
            raise ValueError(f"rank_by: the ranking model's outputs are {self.outputs}, got {self.rank_by!r}")
        self._catalogue_rows = self._catalogue_lookup(ranking)

    @property
    def unknown(self) -> dict[str, int]:
        """Ids the bundle did not know, by request field, counted per thread: a server with several
        compute threads reads the increase over each batch on the thread that answered it."""
        counts = getattr(self._per_thread, "unknown", None)
        if counts is None:
            counts = self._per_thread.unknown = {"history": 0, "candidates": 0}
        return counts

    # ---- limits the server validates against

    @property
    def max_history(self) -> int:
        """The longest window any part reads: longer histories are refused, not silently cut."""
        windows = [int(part.schema.get("max_length") or part.schema.get("max_events") or 0)
                   for part in self.bundle.parts.values()]
        return max([w for w in windows if w > 0], default=1000)

    # ---- answering

    # no_grad, not inference_mode: inference_mode measured ~4% less CPU, but it skips the autograd
    # dispatch key, and fbgemm's fused embedding lookups (engine tables) have CPU kernels only there.
    @torch.no_grad()
    def recommend(self, queries: list[Query]) -> list[Answer]:
        """One answer per query; raises ``QueryError`` for a query the bundle cannot answer."""
        started = time.perf_counter()
        candidates, retrieval_scores = self._retrieve(queries)
        retrieved = time.perf_counter()
        ranking = self.bundle.ranking
        if ranking is None:
            answers = [Answer(c[:q.k].tolist(), s[:q.k].tolist()) for q, c, s in zip(queries, candidates, retrieval_scores)]
        else:
            candidates = self._known_to_ranker(candidates)
            rank = self._rank_hstu if ranking.predictor.kind == "ranking" else self._rank_ctr
            task_scores = rank(queries, candidates)
            answers = [self._top(q, c, s) for q, c, s in zip(queries, candidates, task_scores)]
        finished = time.perf_counter()
        stage_ms = {"retrieval": round((retrieved - started) * 1e3, 3), "ranking": round((finished - retrieved) * 1e3, 3)}
        for answer in answers:
            answer.stage_ms = dict(stage_ms)
        return answers

    @torch.no_grad()
    def score(self, rows: pa.Table) -> dict[str, np.ndarray]:
        """The ranking part's per-output scores of ``rows`` (``Predictor.score``)."""
        if self.bundle.ranking is None:
            raise QueryError("rows", "this bundle has no CTR or ranking model to score rows with")
        try:
            return self.bundle.ranking.predictor.score(rows)
        except ValueError as error:
            raise QueryError("rows", str(error)) from error

    def self_check(self) -> None:
        """Answer one query built from the catalogue: a bundle that cannot is not swapped in."""
        part = self.bundle.retrieval
        if part is not None:
            items = part.item_raw_ids[:2]
        elif self.bundle.ranking is not None and self.bundle.ranking.catalogue is not None:
            items = self.bundle.ranking.catalogue.column(schema.ITEM_ID).to_numpy()[:2]
        else:
            return
        answer = self.recommend([Query(items=np.asarray(items, np.int64), k=1, candidates=None if part else items)])[0]
        if not all(np.isfinite(answer.scores)):
            raise ValueError(f"{self.bundle.path}: self-check answered non-finite scores {answer.scores}")

    # ---- stage 1

    def _retrieve(self, queries: list[Query]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        part = self.bundle.retrieval
        wanted = [q for q in queries if q.candidates is None]
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if wanted:
            if part is None:
                raise QueryError("candidates", "this bundle has no retrieval model: give the candidates to rank")
            self._count_unknown_history(part, wanted)
            times = [np.arange(q.items.size) if q.timestamps is None else q.timestamps for q in wanted]
            vectors = part.predictor.user_vectors([q.items for q in wanted], times,
                                                  [self._request_time(q) for q in wanted])
            depth = max(self._depth(q) for q in wanted)
            seen = max((np.unique(q.items).size for q in wanted if q.exclude_seen), default=0)
            scores, positions = part.search(vectors, min(depth + seen, part.item_raw_ids.size))
            for query, row_scores, row_positions in zip(wanted, scores, positions):
                keep = row_positions >= 0
                ids, values = part.item_raw_ids[row_positions[keep]], row_scores[keep]
                if query.exclude_seen:
                    fresh = ~np.isin(ids, query.items)
                    ids, values = ids[fresh], values[fresh]
                found[id(query)] = (ids[:self._depth(query)], values[:self._depth(query)])
        candidates, scores = [], []
        for query in queries:
            if query.candidates is not None:
                given = np.asarray(query.candidates, dtype=np.int64)
                if query.exclude_seen:
                    given = given[~np.isin(given, query.items)]
                candidates.append(given)
                scores.append(np.zeros(given.size, np.float32))
            else:
                candidates.append(found[id(query)][0])
                scores.append(found[id(query)][1])
        return candidates, scores

    def _depth(self, query: Query) -> int:
        """Items retrieved for ``query``: its k, or with a ranking part at least ``num_candidates``."""
        return query.k if self.bundle.ranking is None else max(query.k, self.num_candidates)

    def _count_unknown_history(self, part: BundlePart, queries: list[Query]) -> None:
        hashed = hash_array(pa.array(np.concatenate([q.items for q in queries])), schema.ITEM_ID)
        rows = part.predictor.model.item_rows(torch.from_numpy(hashed))
        self.unknown["history"] += int((rows == 0).sum())

    @staticmethod
    def _request_time(query: Query) -> int:
        if query.request_time is not None:
            return int(query.request_time)
        return int(query.timestamps[-1]) if query.timestamps is not None else int(query.items.size - 1)

    # ---- stage 2

    def _known_to_ranker(self, candidates: list[np.ndarray]) -> list[np.ndarray]:
        """Each query's candidates less those the ranking model's item vocabulary does not know
        (counted), the whole batch looked up in one call."""
        vocabulary = self.bundle.ranking.predictor.task.inputs.vocabularies.get(schema.ITEM_ID)
        flat = np.concatenate(candidates).astype(np.int64, copy=False)
        if not isinstance(vocabulary, ExactVocabulary) or flat.size == 0:
            return candidates  # a managed vocabulary admits new ids: nothing is unknown to it
        known = vocabulary.contains(torch.from_numpy(hash_array(pa.array(flat), schema.ITEM_ID))).numpy()
        self.unknown["candidates"] += int((~known).sum())
        bounds = np.cumsum([0, *[items.size for items in candidates]])
        return [items[known[start:end]] for items, start, end in zip(candidates, bounds, bounds[1:])]

    @staticmethod
    def _catalogue_lookup(part: BundlePart | None) -> tuple[np.ndarray, np.ndarray] | None:
        if part is None or part.catalogue is None:
            return None
        ids = part.catalogue.column(schema.ITEM_ID).to_numpy()
        order = np.argsort(ids, kind="stable")
        return ids[order], order

    def item_features(self, item_ids: np.ndarray, names: list[str]) -> dict[str, pa.Array]:
        """Each feature's catalogue value for ``item_ids`` (null for items not in the catalogue)."""
        catalogue = self.bundle.ranking.catalogue
        if self._catalogue_rows is None or not names:
            return {name: pa.nulls(item_ids.size, pa.int64()) for name in names}
        sorted_ids, order = self._catalogue_rows
        where = np.searchsorted(sorted_ids, item_ids).clip(max=max(sorted_ids.size - 1, 0))
        found = sorted_ids[where] == item_ids if sorted_ids.size else np.zeros(item_ids.size, bool)
        rows = pa.array(order[where], mask=~found)
        return {name: catalogue.column(name).take(rows).combine_chunks() if name in catalogue.column_names
                else pa.nulls(item_ids.size, pa.int64()) for name in names}

    def ranking_rows(self, query: Query, candidates: np.ndarray) -> pa.Table:
        """The impressions HSTU ranking's ``Predictor.score`` reads for ``query``'s candidates (one row
        each, the history as ``hist_*`` lists): the offline equivalent of ``_rank_hstu``."""
        predictor = self.bundle.ranking.predictor
        item_features, user_features = RankingTask._feature_columns(predictor.config)
        count = candidates.size
        history, _ = self._history_columns([query], item_features)
        columns: dict[str, Any] = {schema.USER_ID: pa.array([query.user_id or -1] * count, pa.int64()),
                                   schema.ITEM_ID: pa.array(candidates, pa.int64()),
                                   schema.TIMESTAMP: pa.array([self._request_time(query)] * count, pa.int64())}
        columns.update(self.item_features(candidates, item_features))
        columns.update({name: self._context_column(query, name, count) for name in user_features})
        for name, values in history.items():
            columns[history_column(name)] = pa.array([values] * count, pa.list_(values.type))
        return pa.table(columns)

    def _history_columns(self, queries: list[Query], item_features: list[str]) -> tuple[dict[str, pa.Array], np.ndarray]:
        """Each history's last ``max_events`` events (the ranking model's window) as columns, the
        queries' events concatenated (one array per column for the batch), and their counts."""
        ranking = self.bundle.ranking
        actions = list(ranking.predictor.config.data.actions)
        window = int(ranking.schema.get("max_events") or 0)
        items, times, values = [], [], {name: [] for name in actions}
        for query in queries:
            unknown = sorted(set(query.actions) - set(actions))
            if unknown:
                raise QueryError("history.actions", f"unknown action(s) {unknown}; this model's actions are {actions}")
            n = query.items.size
            kept = slice(max(0, n - (window or n)), n)
            items.append(query.items[kept])
            times.append((query.timestamps if query.timestamps is not None else np.arange(n))[kept])
            for name in actions:
                values[name].append(np.asarray(query.actions.get(name, np.zeros(n)), np.float32)[kept])
        flat_items = np.concatenate(items).astype(np.int64, copy=False)
        history = {schema.ITEM_ID: pa.array(flat_items, pa.int64()),
                   schema.TIMESTAMP: pa.array(np.concatenate(times).astype(np.int64, copy=False), pa.int64())}
        for name in actions:
            history[name] = pa.array(np.concatenate(values[name]))
        history.update(self.item_features(flat_items, item_features))
        return history, np.array([part.size for part in items])

    @staticmethod
    def _context_column(query: Query, name: str, count: int) -> pa.Array:
        value = query.context.get(name)
        return pa.array([value] * count) if value is not None else pa.nulls(count, pa.int64())

    def _rank_hstu(self, queries: list[Query], candidates: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """M-FALCON for the whole batch: every user's history cached in one pass, then every user's
        candidates appended, a micro-batch of each user per call."""
        predictor = self.bundle.ranking.predictor
        item_features, user_features = RankingTask._feature_columns(predictor.config)
        columns = RankingColumns(list(predictor.config.data.actions), item_features, user_features)
        answered = [i for i, items in enumerate(candidates) if items.size]
        results = [{name: np.zeros(0, np.float32) for name in self.outputs} for _ in queries]
        if not answered:
            return results
        history, lengths = self._history_columns([queries[i] for i in answered], item_features)
        piece = {schema.USER_ID: pa.array([queries[i].user_id or -1 for i in answered], pa.int64())}
        offsets = pa.array(np.cumsum([0, *lengths]), pa.int32())
        for name, values in history.items():
            piece[history_column(name)] = pa.ListArray.from_arrays(offsets, values)
        for name in user_features:
            piece[name] = pa.concat_arrays([self._context_column(queries[i], name, 1) for i in answered])
        flat = np.concatenate([candidates[i] for i in answered])
        counts = torch.tensor([candidates[i].size for i in answered])
        candidate_features = {name: torch.from_numpy(hash_array(values, name))
                              for name, values in self.item_features(flat, item_features).items()}
        hashed = torch.from_numpy(hash_array(pa.array(flat, pa.int64()), schema.ITEM_ID))
        times = torch.repeat_interleave(torch.tensor([self._request_time(queries[i]) for i in answered]), counts)
        outputs = predictor.model.score_candidates(columns.history_batch(pa.table(piece)), hashed,
                                                   candidate_features, times, num_candidates=counts,
                                                   micro_batch=self.micro_batch)
        scores = predictor.model.predict(outputs).numpy()
        bounds = np.cumsum([0, *counts.tolist()])
        for i, start, end in zip(answered, bounds, bounds[1:]):
            results[i] = {name: scores[start:end, index] for index, name in enumerate(self.outputs)}
        return results

    def _rank_ctr(self, queries: list[Query], candidates: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """One row per user x candidate, the whole batch's rows built column by column at once
        (5% less CPU at batches of 32 than a table per query, BENCHMARKS.md)."""
        predictor = self.bundle.ranking.predictor
        spec_columns = [*predictor.task.config.data.sparse, *predictor.task.config.data.dense]
        flat = np.concatenate(candidates).astype(np.int64, copy=False)
        owner = pa.array(np.repeat(np.arange(len(queries)), [items.size for items in candidates]))  # each row's query
        columns = {schema.ITEM_ID: pa.array(flat, pa.int64())}
        if schema.USER_ID in spec_columns:
            columns[schema.USER_ID] = pa.array([query.user_id for query in queries], pa.int64()).take(owner)
        catalogue_columns = self.bundle.ranking.catalogue.column_names if self.bundle.ranking.catalogue else []
        columns.update(self.item_features(flat, [n for n in spec_columns if n in catalogue_columns and n != schema.ITEM_ID]))
        for name in spec_columns:
            if name not in columns:
                values = [query.context.get(name) for query in queries]
                per_query = pa.nulls(len(queries), pa.int64()) if all(v is None for v in values) else pa.array(values)
                columns[name] = per_query.take(owner)
        merged = pa.table(columns)
        scores = self.score(merged) if merged.num_rows else {name: np.zeros(0, np.float32) for name in self.outputs}
        bounds = np.cumsum([0, *[c.size for c in candidates]])
        return [{name: values[start:end] for name, values in scores.items()} for start, end in zip(bounds, bounds[1:])]

    def _top(self, query: Query, candidates: np.ndarray, task_scores: dict[str, np.ndarray]) -> Answer:
        order = np.argsort(-task_scores[self.rank_by], kind="stable")[:query.k]
        return Answer(candidates[order].tolist(), task_scores[self.rank_by][order].tolist(),
                      {name: values[order].tolist() for name, values in task_scores.items()})


__all__ = ["Answer", "Query", "QueryError", "Recommender"]
