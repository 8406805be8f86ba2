"""A trained run's best model, answering without its training data: scores and top-k recommendations.

``Predictor.from_run(RUN)`` reads only the run's ``checkpoint.pt`` (config, model inputs,
weights; ``weights_only=True``). What it answers depends on the run's task:

* ``ctr``: ``score(rows)`` gives each label's click probability for rows holding the run's
  feature columns (labels not needed);
* ``ranking``: ``score(rows)`` gives each task's prediction (probability, or value for a
  regression task) for impressions with their ``hist_*`` history columns;
* ``sequential``: ``recommend(item_ids, ...)`` gives the top-k catalogue items after a history,
  as raw item ids, the history excluded by default.

``predict_file`` scores a Parquet file in batches (``terarec predict``).

Example:
    >>> predictor = Predictor.from_run("runs/frappe-wukong-20261205-120000")  # doctest: +SKIP
    >>> predictor.score(table)["click"][:3]  # doctest: +SKIP
    array([0.91, 0.04, 0.33], dtype=float32)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data import schema
from terarec.data.batches import SequenceBatch
from terarec.data.ctr_dataset import ctr_batch_from_table
from terarec.data.ranking import RankingColumns
from terarec.embedding.collection import PooledEmbeddings
from terarec.embedding.engine import FusedPooledEmbeddings, quantize_for_inference
from terarec.eval.protocols import exclude_seen as remove_seen
from terarec.features.hashing import hash_array
from terarec.models.protocols import MultiTask, ScoresCatalogue
from terarec.train.loop import load_task
from terarec.train.setup import feature_spec, set_threads
from terarec.train.tasks import RankingTask, Task


class Predictor:
    """Answers with one trained model (see the module docstring).

    Args:
        task: a task whose model holds trained weights (``load_task``).
    """

    def __init__(self, task: Task, tables: str = "fp32") -> None:
        self.task = task
        self.model = task.model.eval()
        self.config = task.config
        if tables not in ("fp32", "int8"):
            raise ValueError(f"tables: expected 'fp32' or 'int8', got {tables!r}")
        self.quantized_tables = quantize_pooled_tables(self.model) if tables == "int8" else 0

    @classmethod
    def from_run(cls, run_dir: str | Path, threads: int = 0, tables: str = "fp32") -> "Predictor":
        """The run's best checkpoint; ``threads`` intra-op threads (0 = this process's CPU quota);
        ``tables="int8"`` answers from row-wise int8 copies of the pooled tables (a quarter of the
        memory; see BENCHMARKS.md for its speed and the score error it costs)."""
        set_threads(threads)
        return cls(load_task(run_dir), tables=tables)

    @property
    def kind(self) -> str:
        return self.task.kind

    @property
    def outputs(self) -> list[str]:
        """Names of the score columns: the labels (CTR, ranking)."""
        return list(self.config.data.labels or [])

    # ---- scoring rows

    @torch.no_grad()
    def score(self, rows: pa.Table) -> dict[str, np.ndarray]:
        """Per-output scores of each row: CTR probabilities per label; ranking predictions per task."""
        if self.kind == "ctr":
            spec = dataclasses.replace(feature_spec(self.config, None), labels=[])
            self._require(rows, spec.input_columns)
            scores = torch.sigmoid(self.model(ctr_batch_from_table(rows, spec)))
        elif self.kind == "ranking":
            item_features, user_features = RankingTask._feature_columns(self.config)
            actions = list(self.config.data.actions)
            # The candidates' actions are what is predicted: absent columns are fine.
            for name in actions:
                if name not in rows.column_names:
                    rows = rows.append_column(name, pa.array(np.zeros(rows.num_rows, np.float32)))
            columns = RankingColumns(actions, item_features, user_features)
            needed = [schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP, *item_features, *user_features]
            needed += [f"hist_{name}" for name in (schema.ITEM_ID, schema.TIMESTAMP, *actions, *item_features)]
            self._require(rows, needed)
            outputs = self.model(columns.impression_batch(rows))
            if not isinstance(self.model, MultiTask):
                raise TypeError(f"model '{self.config.model['name']}' is not a multi-task ranking model")
            scores = torch.where(self.model.is_regression, torch.expm1(outputs).clamp(min=0), torch.sigmoid(outputs))
        else:
            raise ValueError("a sequential run recommends items after a history: use recommend(), not score()")
        return {name: scores[:, index].numpy() for index, name in enumerate(self.outputs)}

    @staticmethod
    def _require(rows: pa.Table, columns: list[str]) -> None:
        missing = [name for name in columns if name not in rows.column_names]
        if missing:
            raise ValueError(f"rows to score lack column(s) {missing} (have {rows.column_names})")

    # ---- recommending

    @torch.no_grad()
    def recommend(
        self,
        item_ids: list[int] | np.ndarray,
        timestamps: list[int] | np.ndarray | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        request_time: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (raw item ids, scores) after one user's history (oldest first)."""
        items, scores = self.recommend_many([item_ids], None if timestamps is None else [timestamps], k,
                                            exclude_seen, None if request_time is None else [request_time])
        return items[0], scores[0]

    @torch.no_grad()
    def recommend_many(
        self,
        histories: list,
        timestamps: list | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        request_times: list[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) raw item ids and scores for B histories; the model reads each history's last
        ``data.max_length`` events; ``exclude_seen`` removes every item of the whole history."""
        self._require_catalogue()
        if not histories:
            raise ValueError("recommend: no histories given")
        raw = [np.asarray(history, dtype=np.int64) for history in histories]
        scores = self.model.score_catalogue(self._sequence_batch(raw, timestamps, request_times))
        if exclude_seen:  # the evaluation's exclude_history rule: every item of the whole history
            seen = hash_array(pa.array(np.concatenate(raw)), schema.ITEM_ID)
            rows = self.model.item_rows(torch.from_numpy(seen))
            scores = remove_seen(scores, rows, torch.tensor([h.size for h in raw]))
        scores[:, 0] = -torch.inf  # the default row of unknown ids is never an answer
        k = min(k, scores.shape[1] - 1)
        top_scores, top_rows = torch.topk(scores, k, dim=1)
        raw_ids = self.task.record["item_raw_ids"]
        return raw_ids[top_rows - 1].numpy(), top_scores.numpy()

    def _sequence_batch(self, raw: list[np.ndarray], timestamps: list | None,
                        request_times: list[int] | None) -> SequenceBatch:
        """One batch of the histories' last ``data.max_length`` events (timestamps default 0, 1, ...)."""
        if any(history.size == 0 for history in raw):
            raise ValueError("recommend: every history needs at least one item")
        times = [np.arange(h.size, dtype=np.int64) if timestamps is None else np.asarray(t, dtype=np.int64)
                 for h, t in zip(raw, timestamps or raw)]
        for history, time in zip(raw, times):
            if time.shape != history.shape:
                raise ValueError(f"recommend: {history.size} items but {time.size} timestamps")
        window = self.config.data.max_length
        kept = [h[-window:] for h in raw]
        kept_times = [t[-window:] for t in times]
        values = hash_array(pa.array(np.concatenate(kept)), schema.ITEM_ID)
        lengths = torch.tensor([h.size for h in kept], dtype=torch.int64)
        query = [int(t[-1]) for t in kept_times] if request_times is None else list(request_times)
        return SequenceBatch(
            user_ids=torch.arange(len(kept), dtype=torch.int64),
            item_ids=KeyedJaggedTensor.from_lengths_sync([schema.ITEM_ID], torch.from_numpy(values), lengths),
            timestamps=torch.from_numpy(np.concatenate(kept_times)),
            actions=torch.zeros(int(lengths.sum()), len(self.config.data.actions)),
            target_timestamps=torch.tensor(query, dtype=torch.int64),
        )

    def _require_catalogue(self) -> ScoresCatalogue:
        if self.kind != "sequential" or not isinstance(self.model, ScoresCatalogue):
            raise ValueError(f"run of task '{self.kind}' with model '{self.config.model['name']}' does not recommend "
                             "from the catalogue (a sequential run does)")
        return self.model

    @torch.no_grad()
    def user_vectors(self, histories: list, timestamps: list | None = None,
                     request_times: list[int] | None = None) -> np.ndarray:
        """(B, d) float32 unit user vectors: their inner product with ``item_vectors()`` is the score
        ``recommend`` ranks by (the retrieval index searches these)."""
        model = self._require_catalogue()
        batch = self._sequence_batch([np.asarray(h, dtype=np.int64) for h in histories], timestamps, request_times)
        return model.head.normalise(model.user_vectors(batch)).numpy().astype(np.float32)

    @torch.no_grad()
    def item_vectors(self) -> np.ndarray:
        """(N, d) float32 unit vectors of catalogue rows 1..N (aligned with ``record['item_raw_ids']``)."""
        model = self._require_catalogue()
        return model.head.normalise(model.items.weight[1:]).numpy().astype(np.float32)

    # ---- files

    def predict_file(self, source: str | Path, out: str | Path, batch_size: int = 4096, k: int = 10,
                     progress: bool = False) -> int:
        """Score (CTR, ranking) or recommend for (sequential) a Parquet file in batches; returns rows written."""
        source, out = Path(source), Path(out)
        if not source.exists():
            raise FileNotFoundError(f"input file {source} does not exist")
        try:
            file = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"{source}: not a readable Parquet file ({error})") from error
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tmp = out.with_name(f".{out.name}.tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "sequential":
            written = self._recommend_file(pq.read_table(source), tmp, batch_size, k, progress)
        else:
            written, writer = 0, None
            with tqdm(total=file.metadata.num_rows, desc="predict", unit="row", disable=not progress) as bar:
                for record_batch in file.iter_batches(batch_size=batch_size):
                    rows = pa.Table.from_batches([record_batch])
                    for name, values in self.score(rows).items():
                        rows = rows.append_column(f"score_{name}", pa.array(values))
                    writer = writer or pq.ParquetWriter(tmp, rows.schema)
                    writer.write_table(rows)
                    written += rows.num_rows
                    bar.update(rows.num_rows)
            if writer is None:
                raise ValueError(f"{source}: no rows to score")
            writer.close()
        tmp.replace(out)
        return written

    def _recommend_file(self, events: pa.Table, tmp: Path, batch_size: int, k: int, progress: bool) -> int:
        self._require(events, [schema.USER_ID, schema.ITEM_ID])
        if schema.TIMESTAMP not in events.column_names:
            events = events.append_column(schema.TIMESTAMP, pa.array(np.arange(events.num_rows, dtype=np.int64)))
        events = events.sort_by([(schema.USER_ID, "ascending"), (schema.TIMESTAMP, "ascending")])
        users = events.column(schema.USER_ID).to_numpy()
        items = events.column(schema.ITEM_ID).to_numpy()
        times = events.column(schema.TIMESTAMP).to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if users.size else np.empty(0, np.int64)
        ends = np.r_[starts[1:], users.size]
        user_ids, top_items, top_scores = [], [], []
        for first in tqdm(range(0, starts.size, batch_size), desc="recommend", disable=not progress):
            chosen = range(first, min(first + batch_size, starts.size))
            found, scores = self.recommend_many([items[starts[i]:ends[i]] for i in chosen],
                                                [times[starts[i]:ends[i]] for i in chosen], k)
            user_ids.append(users[starts[list(chosen)]])
            top_items += list(found)
            top_scores += list(scores)
        if not user_ids:
            raise ValueError("no events to recommend for")
        table = pa.table({schema.USER_ID: np.concatenate(user_ids),
                          "items": pa.array([list(map(int, row)) for row in top_items], pa.list_(pa.int64())),
                          "scores": pa.array([list(map(float, row)) for row in top_scores], pa.list_(pa.float32()))})
        pq.write_table(table, tmp)
        return table.num_rows


def quantize_pooled_tables(model: torch.nn.Module) -> int:
    """Replace every pooled table module of ``model`` (CTR models' ``sparse_arch``) by its row-wise
    int8 copy, for inference; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (FusedPooledEmbeddings, PooledEmbeddings)):
                setattr(parent, name, quantize_for_inference(child))
                replaced += 1
    return replaced


__all__ = ["Predictor", "quantize_pooled_tables"]
