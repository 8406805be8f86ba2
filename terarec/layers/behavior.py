"""Behaviour inputs of DIN, DIEN and SIM: the target and its user's history in shared tables.

A CTR batch of a dataset with history columns (``terarec.data.history``) holds, beside the
ordinary features, pairs of keys such as ``item_id`` (the target, one id a row) and
``hist_item_id`` (the user's earlier items, a list a row). Both keys of a pair hold ids of
the same slot, and ``BehaviorEmbeddings`` looks both up in one TorchRec table (one
``EmbeddingConfig`` naming both features), so the target's embedding and the history's are
comparable: attention scores like with like. Every other sparse feature is sum-pooled
through ``terarec.embedding.factory`` as in the other CTR models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchrec import EmbeddingCollection, EmbeddingConfig
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from terarec.config import ConfigError
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.embedding.factory import TableInputs, pooled_embeddings
from terarec.embedding.residual import NO_CLUSTER, ResEmbedding


def last_k(ids: JaggedTensor, k: int) -> JaggedTensor:
    """The last ``k`` values of each row of a jagged tensor (all of them when ``k`` <= 0).

    Example:
        >>> jt = JaggedTensor(values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([3, 1]))
        >>> last_k(jt, 2).values().tolist()
        [2, 3, 4]
    """
    lengths = ids.lengths()
    if k <= 0 or lengths.numel() == 0 or int(lengths.max()) <= k:
        return ids
    kept = lengths.clamp(max=k)
    starts = ids.offsets()[1:] - kept  # (B,) first kept value of each row
    before = torch.cumsum(kept, 0) - kept  # (B,) kept values of the earlier rows
    index = torch.arange(int(kept.sum())) + torch.repeat_interleave(starts - before, kept)
    return JaggedTensor(values=ids.values()[index], lengths=kept)


def pad_jagged(values: torch.Tensor, lengths: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad jagged rows of vectors: (N, d) values, (B,) lengths -> (B, width, d) and a (B, width) mask.

    Example:
        >>> padded, mask = pad_jagged(torch.ones(3, 2), torch.tensor([1, 0, 2]), 2)
        >>> mask.tolist()
        [[True, False], [False, False], [True, True]]
    """
    batch = lengths.numel()
    row = torch.repeat_interleave(torch.arange(batch), lengths)  # (N,)
    position = torch.arange(values.shape[0]) - (torch.cumsum(lengths, 0) - lengths)[row]  # (N,)
    padded = values.new_zeros(batch, width, *values.shape[1:])
    padded = padded.index_put((row, position), values)
    mask = torch.zeros(batch, width, dtype=torch.bool)
    mask[row, position] = True
    return padded, mask


@dataclass
class Behaviors:
    """What ``BehaviorEmbeddings`` returns for a batch (P pairs, E extra keys, d-wide tables).

    Args:
        context: (B, F * d) sum-pooled embeddings of the F other sparse features.
        target: (B, D) the target's embeddings, the P pairs' concatenated (D = P * d).
        history: (B, T, D) the history's in the same tables, oldest first, zeros after each
            row's length: what attention compares with the target.
        extra: (B, T, E * d) the history-only features' (e.g. the rating each earlier item got),
            aligned with ``history``: carried with each behaviour, never compared with the target.
        mask: (B, T) True at real history positions.
        target_ids: (B, P) the target's raw 64-bit ids, one column per pair.
        history_ids: (B, T, P) the history's raw ids (0 at padding).
    """

    context: torch.Tensor
    target: torch.Tensor
    history: torch.Tensor
    extra: torch.Tensor
    mask: torch.Tensor
    target_ids: torch.Tensor
    history_ids: torch.Tensor

    @property
    def sequence(self) -> torch.Tensor:
        """(B, T, D + E * d): each behaviour whole, ``history`` and ``extra`` side by side."""
        return torch.cat([self.history, self.extra], dim=2)


def _residual_table(inputs: TableInputs, target: str, pair: ExactVocabulary, embedding_dim: int) -> ResEmbedding:
    """A Res-embedding table over a pair's vocabulary, each row in the cluster its id has in the target's own."""
    if target not in inputs.clusters:
        raise ConfigError(f"embedding.residual.features: no clusters were fitted for '{target}'")
    own = inputs.vocabularies[target]
    own_rows = own(pair.ids).numpy()  # 0 for history-only ids: no cluster
    clusters = np.concatenate([[NO_CLUSTER], np.where(own_rows > 0, np.asarray(inputs.clusters[target])[own_rows],
                                                      NO_CLUSTER)])
    options = inputs.embedding.residual
    return ResEmbedding(clusters, embedding_dim, options.l2, options.num_clusters, target,
                        recluster_every=options.recluster_every)


class BehaviorEmbeddings(nn.Module):
    """Shared target / history tables plus the pooled other features: KJT -> ``Behaviors``.

    Args:
        inputs: the task's inputs (a ``ModelInputs``, a dataclass); must hold every key named.
        history: history key -> target key, e.g. ``{"hist_item_id": "item_id", "hist_genre": "genre"}``;
            each pair's table covers the union of both keys' vocabularies.
        embedding_dim: d, the width of every table.
        max_history: keep each row's last ``max_history`` history entries (0 = all).
        extra: history-only keys aligned with the history (e.g. ``hist_rating``), own tables.

    Example:
        >>> emb = BehaviorEmbeddings(inputs, {"hist_item_id": "item_id"}, 16, max_history=50)  # doctest: +SKIP
        >>> emb(batch.sparse_features).history.shape  # doctest: +SKIP
        torch.Size([B, T, 16])
    """

    def __init__(
        self,
        inputs: TableInputs,
        history: dict[str, str],
        embedding_dim: int,
        max_history: int = 0,
        extra: list[str] | None = None,
    ) -> None:
        super().__init__()
        extra = list(extra or [])
        if not history:
            raise ConfigError("model.history: name at least one history feature, e.g. {hist_item_id: item_id}")
        known = list(inputs.vocabularies)
        for field, keys in (("model.history", [*history, *history.values()]), ("model.history_extra", extra)):
            for key in keys:
                if key not in inputs.vocabularies:
                    raise ConfigError(f"{field}: '{key}' is not a sparse feature of this run (data.sparse: {known})")
                if not isinstance(inputs.vocabularies[key], ExactVocabulary):
                    raise ConfigError(f"{field}: '{key}' needs embedding.vocabulary=exact (shared target / history "
                                      "tables are built from exact vocabularies)")
        for key in [*history, *extra]:
            if key in history.values():
                raise ConfigError(f"model.history: '{key}' is both a history and a target feature")
        if set(extra) & set(history):
            raise ConfigError(f"model.history_extra: {sorted(set(extra) & set(history))} already in model.history")
        if max_history < 0:
            raise ConfigError(f"model.max_history: expected >= 0, got {max_history}")
        self.history_keys = list(history)
        self.target_keys = list(history.values())
        self.extra_keys = extra
        self.embedding_dim = embedding_dim
        self.max_history = max_history
        self.behavior_dim = embedding_dim * len(history)  # D
        self.extra_dim = embedding_dim * len(extra)
        # One vocabulary (and table) per pair, named by the target key, over both keys' ids.
        self.vocabularies = nn.ModuleDict(
            {
                target: ExactVocabulary(
                    np.concatenate([inputs.vocabularies[target].ids.numpy(), inputs.vocabularies[hist].ids.numpy()])
                )
                for hist, target in history.items()
            }
            | {key: inputs.vocabularies[key] for key in extra}
        )
        # Res-embedding pairs (embedding.residual.features names the target key): e = C[cluster] + r.
        self.residual = nn.ModuleDict({
            target: _residual_table(inputs, target, self.vocabularies[target], embedding_dim)
            for target in self.target_keys if target in inputs.embedding.residual.features
        })
        for key in inputs.embedding.residual.features:
            if key in history:
                raise ConfigError(f"embedding.residual.features: '{key}' shares its table with '{history[key]}'; "
                                  f"name the target '{history[key]}'")
        # A pair's two keys name one table: TorchRec's way of sharing it.
        table_features = {target: [target, hist] for hist, target in history.items() if target not in self.residual}
        table_features |= {key: [key] for key in extra}
        self.tables = EmbeddingCollection(
            tables=[
                EmbeddingConfig(name=f"t_{name}", embedding_dim=embedding_dim,
                                num_embeddings=self.vocabularies[name].num_rows, feature_names=names)
                for name, names in table_features.items()
            ],
            device=torch.device("cpu"),
        )
        for table in self.tables.embeddings.values():
            nn.init.normal_(table.weight, std=0.01)
        used = {*history, *history.values(), *extra}
        context = {k: v for k, v in inputs.vocabularies.items() if k not in used}
        self.context_keys = list(context)
        self.context_dim = embedding_dim * len(context)
        self.context = (
            pooled_embeddings(dataclasses.replace(inputs, vocabularies=context), embedding_dim) if context else None
        )

    def forward(self, features: KeyedJaggedTensor) -> Behaviors:
        jagged = features.to_dict()
        batch = features.stride()
        context = (
            self.context(KeyedJaggedTensor.from_jt_dict({k: jagged[k] for k in self.context_keys})).values()
            if self.context is not None
            else torch.zeros(batch, 0)
        )  # (B, F * d)
        histories = {key: last_k(jagged[key], self.max_history) for key in self.history_keys + self.extra_keys}
        lengths = histories[self.history_keys[0]].lengths()  # (B,)
        for key, history in histories.items():
            if not torch.equal(history.lengths(), lengths):
                raise ValueError(f"history '{key}' is not aligned with '{self.history_keys[0]}' (lengths differ)")
        for key in self.target_keys:
            if not bool((jagged[key].lengths() == 1).all()):
                raise ValueError(f"target feature '{key}' must hold exactly one id per row")
        # key -> (64-bit ids, lengths, the vocabulary that maps them to its table's rows)
        lookups = {target: (jagged[target].values(), jagged[target].lengths(), target) for target in self.target_keys}
        pairs = zip(self.history_keys, self.target_keys)
        lookups |= {hist: (histories[hist].values(), lengths, target) for hist, target in pairs}
        lookups |= {key: (histories[key].values(), lengths, key) for key in self.extra_keys}
        rows = {key: self.vocabularies[vocabulary](ids) for key, (ids, _, vocabulary) in lookups.items()}
        plain = [key for key, (_, _, vocabulary) in lookups.items() if vocabulary not in self.residual]
        looked_up = {key: jagged.values() for key, jagged in self.tables(KeyedJaggedTensor(
            keys=plain, values=torch.cat([rows[key] for key in plain]),
            lengths=torch.cat([lookups[key][1] for key in plain]))).items()} if plain else {}
        looked_up |= {key: self.residual[lookups[key][2]](rows[key]) for key in lookups if key not in plain}
        width = max(1, int(lengths.max())) if lengths.numel() else 1  # T
        mask = torch.arange(width) < lengths.unsqueeze(1)  # (B, T): right padding

        def padded(keys: list[str]) -> torch.Tensor:  # (B, T, len(keys) * d)
            parts = [pad_jagged(looked_up[key], lengths, width)[0] for key in keys]
            return torch.cat(parts, dim=2) if parts else torch.zeros(batch, width, 0)

        history_ids = [pad_jagged(lookups[key][0].unsqueeze(1), lengths, width)[0] for key in self.history_keys]
        return Behaviors(
            context=context,
            target=torch.cat([looked_up[key] for key in self.target_keys], dim=1),  # (B, D)
            history=padded(self.history_keys),  # (B, T, D)
            extra=padded(self.extra_keys),  # (B, T, E * d)
            mask=mask,  # (B, T)
            target_ids=torch.stack([lookups[key][0] for key in self.target_keys], dim=1),  # (B, P)
            history_ids=torch.cat(history_ids, dim=2),  # (B, T, P)
        )
