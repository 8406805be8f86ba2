"""What a model is told about its inputs when it is built: features, vocabularies, labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from terarec.config import EmbeddingConfig
from terarec.embedding.exact_vocabulary import ExactVocabulary


@dataclass
class ModelInputs:
    """Shapes and vocabularies of a task's inputs.

    Args:
        vocabularies: sparse feature name -> vocabulary (CTR); ``{"item_id": ...}`` (sequential).
        num_dense: width of the dense feature tensor.
        labels: label names, one logit each (CTR).
        embedding: how tables are stored and trained (see ``terarec.embedding.factory``).
        learning_rate: the run's learning rate, the sparse optimizer's default.
        row_counts: feature -> training lookups per table row (for ``embedding.bands``).
        clusters: feature -> interest cluster per table row (for ``embedding.residual``).
    """

    vocabularies: dict[str, ExactVocabulary] = field(default_factory=dict)
    num_dense: int = 0
    labels: list[str] = field(default_factory=list)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    learning_rate: float = 1e-3
    row_counts: dict[str, np.ndarray] = field(default_factory=dict)
    clusters: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def item_vocabulary(self) -> ExactVocabulary:
        if "item_id" not in self.vocabularies:
            raise ValueError("this model needs an 'item_id' feature")
        return self.vocabularies["item_id"]
