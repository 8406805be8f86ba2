"""Embedding lookup for KeyedJaggedTensors of 64-bit ids: vocabulary remap, then TorchRec tables.

The models' dense parts receive what these modules return (a pooled KeyedTensor, or a
JaggedTensor of sequence embeddings) and never touch tables, so the same model runs with
exact, hashed or managed vocabularies and with sharded tables.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, EmbeddingCollection, EmbeddingConfig
from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor, KeyedTensor

from terarec.embedding.exact_vocabulary import ExactVocabulary


INIT_STD = 0.01  # tables start as N(0, INIT_STD**2), as the engine's (EmbeddingEngineConfig.init_std)
# TorchRec's sharded kernels re-initialise a table as U(weight_init_min, weight_init_max) (default
# +-1/sqrt(rows): 30x wider than N(0, 0.01^2) for a 10-row table); these bounds give that uniform
# the one-process variance.
SHARDED_INIT_BOUND = INIT_STD * 3**0.5


def sum_pooled_tables(tables: list[tuple[str, int, int]]) -> EmbeddingBagCollection:
    """A CPU EmbeddingBagCollection of sum-pooled tables, one per (feature key, width, rows)."""
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f"t_{key}", embedding_dim=width, num_embeddings=rows, feature_names=[key], pooling=PoolingType.SUM,
                weight_init_min=-SHARDED_INIT_BOUND, weight_init_max=SHARDED_INIT_BOUND,
            )
            for key, width, rows in tables
        ],
        device=torch.device("cpu"),
    )


def remap(features: KeyedJaggedTensor, vocabularies: nn.ModuleDict) -> KeyedJaggedTensor:
    """Replace each key's 64-bit ids by table rows through its vocabulary."""
    rows = [vocabularies[key](features[key].values()) for key in features.keys()]
    return KeyedJaggedTensor(
        keys=features.keys(),
        values=torch.cat(rows) if rows else features.values(),
        lengths=features.lengths(),
        stride=features.stride(),
    )


class PooledEmbeddings(nn.Module):
    """One table per sparse feature, sum-pooled: KJT of 64-bit ids -> KeyedTensor (B, sum of dims).

    Args:
        vocabularies: feature name -> its vocabulary (sizes the table).
        embedding_dim: width of every table.

    Example:
        >>> emb = PooledEmbeddings({"item_id": ExactVocabulary(torch.arange(5))}, 8)
        >>> features = KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.tensor([1, 4, 9]), torch.tensor([2, 1]))
        >>> emb(features).values().shape  # (B, F * D); id 9 is unknown: row 0
        torch.Size([2, 8])
    """

    def __init__(self, vocabularies: dict[str, ExactVocabulary], embedding_dim: int) -> None:
        super().__init__()
        self.feature_names = list(vocabularies)
        self.embedding_dim = embedding_dim
        self.vocabularies = nn.ModuleDict(vocabularies)
        self.tables = sum_pooled_tables(
            [(name, embedding_dim, vocab.num_rows) for name, vocab in vocabularies.items()]
        )
        for table in self.tables.embedding_bags.values():
            nn.init.normal_(table.weight, std=INIT_STD)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        keys = features.keys()
        if keys != self.feature_names:  # a batch with more (or reordered) keys: take this collection's
            missing = [name for name in self.feature_names if name not in keys]
            if missing:
                raise KeyError(f"PooledEmbeddings: features {missing} are not in the batch's keys {keys}")
            features = features.permute([keys.index(name) for name in self.feature_names])
        pooled = self.tables(remap(features, self.vocabularies))
        if pooled.keys() != self.feature_names:  # sharded tables answer in the order of their shards
            pooled = KeyedTensor.from_tensor_list(self.feature_names, [pooled[name] for name in self.feature_names])
        return pooled

    def table_weights(self) -> list[torch.Tensor]:
        """The tables (parameters of the dense optimizer), for a penalty such as L2."""
        return [table.weight for table in self.tables.embedding_bags.values()]


class SequenceEmbeddings(nn.Module):
    """One unpooled table: KJT of 64-bit ids -> JaggedTensor per key, plus catalogue lookups.

    Args:
        vocabulary: the item vocabulary (the catalogue is its ids, rows 1..N).
        embedding_dim: row width.
        feature_name: the KJT key looked up.
    """

    INIT_STD = 0.02  # rows start ~ N(0, INIT_STD^2); a managed vocabulary's reassigned rows too

    def __init__(self, vocabulary: ExactVocabulary, embedding_dim: int, feature_name: str = "item_id") -> None:
        super().__init__()
        self.feature_name = feature_name
        self.vocabularies = nn.ModuleDict({feature_name: vocabulary})
        self.tables = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=f"t_{feature_name}",
                    embedding_dim=embedding_dim,
                    num_embeddings=vocabulary.num_rows,
                    feature_names=[feature_name],
                )
            ],
            device=torch.device("cpu"),
        )
        nn.init.normal_(self.weight, std=self.INIT_STD)

    @property
    def weight(self) -> torch.Tensor:
        """The table, row 0 being the default row of unknown ids."""
        return self.tables.embeddings[f"t_{self.feature_name}"].weight

    @property
    def num_rows(self) -> int:
        return int(self.weight.shape[0])

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Table rows of 64-bit ids (0 for unknown ids)."""
        return self.vocabularies[self.feature_name](ids)

    def send_sparse_gradients(self) -> list[nn.Parameter]:
        """Make lookups send the table row-sparse gradients (the rows looked up, not a table-sized
        tensor of zeros around them); returns the table, whose ``.grad`` the caller must then keep
        as a dense tensor (``terarec.train.loop.clear_gradients``) for dense optimizers to see."""
        self.tables.embeddings[f"t_{self.feature_name}"].sparse = True
        return [self.weight]

    def forward(self, features: KeyedJaggedTensor) -> JaggedTensor:
        return self.tables(remap(features, self.vocabularies))[self.feature_name]

    def table_weights(self) -> list[torch.Tensor]:
        """The table (a parameter of the dense optimizer), for a penalty such as L2."""
        return [self.weight]
