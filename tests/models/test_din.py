"""DIN, the shared behaviour embeddings and target attention; the history fixture DIEN and SIM reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from terarec.config import ConfigError
from terarec.data.batches import CTRBatch
from terarec.data.history import add_history
from terarec.data.prepare import write_dataset
from terarec.data.sources.base import SourceData
from terarec.embedding.exact_vocabulary import ExactVocabulary
from terarec.layers.behavior import BehaviorEmbeddings, last_k, pad_jagged
from terarec.layers.target_attention import TargetAttention, masked_softmax
from terarec.models.din import DIN
from terarec.models.inputs import ModelInputs
from terarec.train.experiment import load_config
from terarec.train.loop import load_task, train

HISTORY = {"hist_item_id": "item_id", "hist_genre": "genre"}
HISTORY_FEATURES = ["user_id", "item_id", "genre", "hist_item_id", "hist_genre"]




# ----------------------------------------------------------------------------- fixtures shared with DIEN / SIM


def write_taste_dataset(folder: Path, num_users: int = 400, events: int = 8, seed: int = 0) -> Path:
    """Like = the movie's genre is the user's taste (5% flipped); only the history tells the taste.

    Each user has one of 4 tastes, and 60% of their events are movies of it, so earlier movies
    reveal it. Every genre and movie is liked equally often over all users and each user's
    taste is fixed, so without the history (item, genre; user_id is seen in training but the
    test event's own user id says nothing new) a model sits at AUC ~0.5 on movie features alone.
    """
    rng = np.random.default_rng(seed)
    n = num_users * events
    users = np.repeat(np.arange(num_users), events)
    taste = rng.integers(0, 4, num_users)[users]
    genre = np.where(rng.random(n) < 0.6, taste, rng.integers(0, 4, n))
    like = (genre == taste) ^ (rng.random(n) < 0.05)
    table = pa.table({
        "user_id": pa.array(users, pa.int64()),
        "item_id": pa.array(genre * 10 + rng.integers(0, 10, n), pa.int64()),
        "timestamp": pa.array(np.tile(np.arange(events), num_users) * 60, pa.int64()),
        "genre": pa.array([f"g{g}" for g in genre]),
        "like": pa.array(like.astype(np.float32)),
    })
    table = add_history(table, ["item_id", "genre"], events)
    write_dataset(SourceData("taste", "test", "events", [table], sparse=HISTORY_FEATURES, labels=["like"]),
                  folder, progress=False)
    return folder


def history_config(folder: Path, run_dir: Path, model: str, *extra: str):
    """A short CTR run on the taste dataset without user_id (the history is the only way to the taste)."""
    return load_config(None, [
        "task=ctr", f"data.path={folder}", "data.labels=[like]", "data.batch_size=128",
        "data.sparse=[item_id, genre, hist_item_id, hist_genre]", model, "train.epochs=4",
        "train.learning_rate=0.02", "train.threads=1", "train.patience=0", "train.checkpoint=false",
        f"run_dir={run_dir}", *extra,
    ])




def tiny_inputs(extra: bool = False) -> ModelInputs:
    """Items 1..9 and genres 100..102 as raw ids (no hashing needed below the data layer)."""
    vocabularies = {
        "user_id": ExactVocabulary(np.arange(3)),
        "item_id": ExactVocabulary(np.arange(1, 6)),  # items 6..9 occur only in histories
        "genre": ExactVocabulary(np.array([100, 101, 102])),
        "hist_item_id": ExactVocabulary(np.arange(1, 10)),
        "hist_genre": ExactVocabulary(np.array([100, 101, 102])),
    }
    if extra:
        vocabularies["hist_rating"] = ExactVocabulary(np.arange(1, 6))
    return ModelInputs(vocabularies=vocabularies, labels=["like"])


def tiny_batch(items: list[int], histories: list[list[int]], extra: bool = False) -> CTRBatch:
    """A batch whose genre of item i is 100 + i % 3 (targets and histories alike)."""
    genre = lambda ids: [100 + i % 3 for i in ids]
    flat = [i for h in histories for i in h]
    features = {
        "user_id": ([0] * len(items), [1] * len(items)),
        "item_id": (items, [1] * len(items)),
        "genre": (genre(items), [1] * len(items)),
        "hist_item_id": (flat, [len(h) for h in histories]),
        "hist_genre": (genre(flat), [len(h) for h in histories]),
    }
    if extra:
        features["hist_rating"] = ([1 + i % 5 for i in flat], [len(h) for h in histories])
    kjt = KeyedJaggedTensor.from_jt_dict(
        {key: JaggedTensor(values=torch.tensor(values, dtype=torch.long), lengths=torch.tensor(lengths))
         for key, (values, lengths) in features.items()}
    )
    labels = torch.tensor([[float(i % 2)] for i in range(len(items))])
    return CTRBatch(kjt, torch.zeros(len(items), 0), labels, torch.zeros(len(items), dtype=torch.long))


# ----------------------------------------------------------------------------- layers


def test_last_k_and_pad_jagged() -> None:
    jagged = JaggedTensor(values=torch.arange(6), lengths=torch.tensor([4, 0, 2]))
    kept = last_k(jagged, 3)
    assert kept.values().tolist() == [1, 2, 3, 4, 5] and kept.lengths().tolist() == [3, 0, 2]
    padded, mask = pad_jagged(kept.values().float().unsqueeze(1), kept.lengths(), 3)
    assert padded.squeeze(2).tolist() == [[1, 2, 3], [0, 0, 0], [4, 5, 0]]
    assert mask.tolist() == [[True, True, True], [False, False, False], [True, True, False]]


def test_masked_softmax_ignores_padding_and_empty_rows() -> None:
    scores = torch.tensor([[1.0, 2.0, 50.0], [3.0, 3.0, 3.0]])
    weights = masked_softmax(scores, torch.tensor([[True, True, False], [False, False, False]]))
    assert torch.allclose(weights[0, :2], torch.softmax(torch.tensor([1.0, 2.0]), 0)) and weights[0, 2] == 0
    assert weights[1].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("normalization", ["none", "softmax"])
def test_target_attention_padding_has_no_weight(normalization: str) -> None:
    torch.manual_seed(0)
    attention = TargetAttention(4, [8], normalization)
    target, history = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    changed = history.clone()
    changed[0, 2] = 100.0  # a padded position
    changed[1] = -7.0  # a row without history
    out = attention(target, history, mask)
    assert torch.allclose(out, attention(target, changed, mask))
    assert out[1].abs().sum() == 0


def test_history_and_target_share_one_table() -> None:
    torch.manual_seed(0)
    embeddings = BehaviorEmbeddings(tiny_inputs(), HISTORY, 4, max_history=3)
    behaviors = embeddings(tiny_batch([3, 5], [[1, 3, 7, 8], []]).sparse_features)
    assert behaviors.target.shape == (2, 8) and behaviors.history.shape == (2, 3, 8)
    assert behaviors.context.shape == (2, 4)  # user_id, pooled
    assert behaviors.mask.tolist() == [[True, True, True], [False, False, False]]  # last 3 of 4
    # Item 3 (with its genre) looks the same as the target of row 0 and inside row 0's history.
    assert torch.equal(behaviors.history[0, 0], behaviors.target[0])
    assert behaviors.history_ids[0, :, 0].tolist() == [3, 7, 8]
    assert behaviors.target_ids.tolist() == [[3, 100], [5, 102]]
    # Items only ever seen in histories still get their own rows in the shared table.
    assert embeddings.vocabularies["item_id"].num_rows == 10


def test_unknown_history_feature_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="model.history: 'hist_movie' is not a sparse feature"):
        DIN(DIN.Config(history={"hist_movie": "item_id"}), tiny_inputs())
    with pytest.raises(ConfigError, match="model.history_extra: 'hist_stars'"):
        DIN(DIN.Config(history=HISTORY, history_extra=["hist_stars"]), tiny_inputs())
    with pytest.raises(ConfigError, match="model.attention_normalization"):
        load_config(None, ["model={name: din, attention_normalization: sum}"])


# ----------------------------------------------------------------------------- DIN


def test_din_shapes_padding_and_gradients() -> None:
    torch.manual_seed(0)
    model = DIN(DIN.Config(embedding_dim=4, history=HISTORY, history_extra=["hist_rating"], attention_mlp=[8],
                           mlp=[16]), tiny_inputs(extra=True))
    model.eval()
    batch = tiny_batch([1, 2, 4], [[6, 7], [], [1, 2, 3, 9]], extra=True)
    logits = model(batch)
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()
    # Row 0's score does not depend on how far the other rows pad the batch.
    shorter = tiny_batch([1, 2, 4], [[6, 7], [], [3]], extra=True)
    assert torch.allclose(model(shorter)[0], logits[0], atol=1e-6)
    model.train()
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch), batch.labels).backward()
    table = model.behaviors.tables.embeddings["t_item_id"].weight
    rows = model.behaviors.vocabularies["item_id"](torch.tensor([6, 7, 9]))  # only ever in a history
    assert (table.grad[rows].abs().sum(dim=1) > 0).all()
    assert model.behaviors.tables.embeddings["t_hist_rating"].weight.grad.abs().sum() > 0


def test_din_learns_what_only_the_history_tells(taste_data: Path, tmp_path: Path) -> None:
    model = ("model={name: din, embedding_dim: 8, history: {hist_item_id: item_id, hist_genre: genre}, "
             "attention_mlp: [16], mlp: [32]}")
    result = train(history_config(taste_data, tmp_path, model, "train.checkpoint=true"), progress=False)
    assert result.test["auc"] > 0.75
    # The checkpoint rebuilds the shared tables' vocabularies and scores the same.
    assert load_task(result.run_dir).evaluate("test")["auc"] == pytest.approx(result.test["auc"])


def test_without_the_history_the_fixture_is_not_learnable(taste_data: Path, tmp_path: Path) -> None:
    plain = history_config(taste_data, tmp_path, "model={name: dlrm, embedding_dim: 8, top_mlp: [32]}",
                           "data.sparse=[item_id, genre]")
    assert train(plain, progress=False).test["auc"] < 0.65
