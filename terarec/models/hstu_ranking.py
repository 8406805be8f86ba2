"""HSTU in ranking mode: interleaved item and action tokens, multi-task heads at item positions.

Zhai et al. 2024, "Actions Speak Louder than Words: Trillion-Parameter Sequential Transducers
for Generative Recommendations", arXiv 2402.17152, sections 2.2 and 3; M-FALCON, section 3.4.

Read beside the paper:

* unified series (sec. 2.1): the user's events become the tokens
  ``[u,] x_0, a_0, x_1, a_1, ..., x_{n-1}, a_{n-1}, x_c`` where x_i is the item token,
  a_i the action token of event i and x_c the candidate appended at the end (sec. 2.2: the
  ranking task is target-aware because the candidate is in the sequence). The optional u is
  the user's slowly changing attributes, kept once at the start (the first event of an
  unchanged run, ``terarec.data.unified``).
* tokens: x_i = e(item_i) + sum_f e_f(feature_f,i) + type_x; a_i = W_a phi(actions_i) + type_a,
  phi = identity for binary actions, log1p for regression ones; u = sum_g e_g(attr_g) + type_u.
  Every token of event i carries its time t_i (u: the first event's), used by the relative
  time bias; positions enter through the relative position bias only.
* a causal stack of HSTU layers (eqs. (1)-(3), ``terarec.layers.hstu``), so x_i sees a_{<i}
  and x_{<=i} but never its own actions.
* multi-task heads (sec. 2.2, "ranking"): at every item token, y_i = MLP(LN(h(x_i))), one
  output per action: binary tasks (click, like) by BCE on logits, regression tasks
  (watch time) by MSE on log1p(value). Training uses every event of a window as a target at
  once; scoring puts the candidate last and reads its item token.
* serving (sec. 3.4): ``score_candidates`` scores the candidates of one or more users with M-FALCON
  (``HSTUStack.cache_history`` / ``score_candidates`` in ``terarec.layers.hstu``): the history's
  tokens run once, then each candidate's item token attends to the history and itself, in
  micro-batches.

The model consumes ``terarec.data.ranking.RankingBatch``es and trains as a ``ranking`` task
it against DIN. It is not wired into ``terarec train`` (that loop builds CTR or sequence
datasets only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from terarec.data.ranking import RankingBatch
from terarec.embedding.collection import SequenceEmbeddings
from terarec.layers.hstu import HSTUStack
from terarec.models.inputs import ModelInputs

ITEM, ACTION, USER = 0, 1, 2  # token types


class HSTURanking(nn.Module):
    """HSTU ranking over interleaved item / action series (see the module docstring).

    Args (Config):
        embedding_dim (64): d, width of every token and of the stack.
        num_layers (2), num_heads (2), attention_dim (0: d / heads), linear_dim (0: d / heads):
            the stack.
        max_events (100): longest series of events; the stack's n is 2 x max_events + 2.
        dropout (0.1): on the tokens and before f2 in each layer.
        num_time_buckets (128): log-scale time-gap buckets of the bias (0: none).
        tasks ({click: binary, like: binary, watch_time: regression}): the actions, in the
            order of the batches' ``actions`` columns, and how each is predicted.
        task_weights ({}): loss weight per task (default 1).
        item_features ([]): per-event categorical features summed into the item token.
        user_features ([]): per-user attributes of the leading user token (none: no token).
        head_mlp ([64]): hidden widths of the shared head.

    Example:
        >>> model = HSTURanking(HSTURanking.Config(), inputs)  # doctest: +SKIP
        >>> predictions = model(batch)  # (candidates, tasks): logits, or log1p values  # doctest: +SKIP
    """

    task = "ranking"
    trainable = True

    @dataclass
    class Config:
        embedding_dim: int = 64
        num_layers: int = 2
        num_heads: int = 2
        attention_dim: int = 0
        linear_dim: int = 0
        max_events: int = 100
        dropout: float = 0.1
        num_time_buckets: int = 128
        tasks: dict[str, Literal["binary", "regression"]] = field(
            default_factory=lambda: {"click": "binary", "like": "binary", "watch_time": "regression"}
        )
        task_weights: dict[str, float] = field(default_factory=dict)
        item_features: list[str] = field(default_factory=list)
        user_features: list[str] = field(default_factory=list)
        head_mlp: list[int] = field(default_factory=lambda: [64])

    def __init__(self, config: Config, inputs: ModelInputs) -> None:
        super().__init__()
        self.config = config
        d = config.embedding_dim
        for name, kind in config.tasks.items():
            if kind not in ("binary", "regression"):
                raise ValueError(f"hstu_ranking: task '{name}' must be 'binary' or 'regression', got {kind!r}")
        self.task_names = list(config.tasks)
        self.register_buffer("is_regression", torch.tensor([k == "regression" for k in config.tasks.values()]))
        self.register_buffer("task_weight", torch.tensor([float(config.task_weights.get(n, 1.0)) for n in self.task_names]))
        names = ["item_id", *config.item_features, *config.user_features]
        missing = [name for name in names if name not in inputs.vocabularies]
        if missing:
            raise ValueError(f"hstu_ranking: no vocabulary for {missing} (have {sorted(inputs.vocabularies)})")
        self.tables = nn.ModuleDict({name: SequenceEmbeddings(inputs.vocabularies[name], d, name) for name in names})
        self.action_proj = nn.Linear(len(self.task_names), d)
        self.token_types = nn.Embedding(3, d)
        nn.init.normal_(self.token_types.weight, std=0.02)
        heads = config.num_heads
        self.stack = HSTUStack(
            HSTUStack.Options(
                embedding_dim=d,
                num_layers=config.num_layers,
                num_heads=heads,
                attention_dim=config.attention_dim or max(1, d // heads),
                linear_dim=config.linear_dim or max(1, d // heads),
                dropout=config.dropout,
                max_length=2 * config.max_events + 2,
                num_buckets=config.num_time_buckets,
            )
        )
        widths = [d, *config.head_mlp]
        layers: list[nn.Module] = [nn.LayerNorm(d)]
        for a, b in pairwise(widths):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], len(self.task_names)))
        self.head = nn.Sequential(*layers)

    # ---- tokens

    def _lookup(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        features = KeyedJaggedTensor.from_lengths_sync([name], ids, torch.ones_like(ids))
        return self.tables[name](features).values()  # (N, d)

    def item_tokens(self, item_ids: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, d) x = e(item) + sum_f e_f + type_x."""
        x = self._lookup("item_id", item_ids) + self.token_types.weight[ITEM]
        for name in self.config.item_features:
            x = x + self._lookup(name, features[name])
        return x

    def action_tokens(self, actions: torch.Tensor) -> torch.Tensor:
        """(N, d) a = W_a phi(actions) + type_a."""
        phi = torch.where(self.is_regression, torch.log1p(actions.clamp(min=0)), actions)
        return self.action_proj(phi) + self.token_types.weight[ACTION]

    def tokens(self, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The interleaved series: (T, d) tokens, (T,) times, (B,) token lengths, (N,) token index of
        each event's item token."""
        if batch.actions.shape[1] != len(self.task_names):
            raise ValueError(f"hstu_ranking: tasks {self.task_names}, batches carry {batch.actions.shape[1]} actions")
        events = batch.item_ids.shape[0]
        items = self.item_tokens(batch.item_ids, batch.features)
        actions = self.action_tokens(batch.actions)
        has_action = ~batch.is_candidate  # a candidate's actions are its labels: no token
        per_event = 1 + has_action.long()
        leading = 1 if self.config.user_features else 0
        series = torch.repeat_interleave(torch.arange(len(batch)), batch.lengths)
        # token index of each event's item token: its series' user tokens + earlier events' tokens
        item_index = torch.cumsum(per_event, 0) - per_event + leading * (series + 1)
        token_lengths = torch.zeros(len(batch), dtype=torch.long).index_add_(0, series, per_event) + leading
        total = int(token_lengths.sum())
        x = items.new_zeros(total, items.shape[1])
        times = batch.timestamps.new_zeros(total)
        x[item_index] = items
        times[item_index] = batch.timestamps
        action_index = item_index[has_action] + 1
        x[action_index] = actions[has_action]
        times[action_index] = batch.timestamps[has_action]
        if leading:
            starts = torch.cumsum(token_lengths, 0) - token_lengths
            user = self.token_types.weight[USER].expand(len(batch), -1)
            for name in self.config.user_features:
                user = user + self._lookup(name, batch.user_features[name])
            x[starts] = user
            first_event = torch.cumsum(batch.lengths, 0) - batch.lengths
            times[starts] = batch.timestamps[first_event.clamp(max=max(events - 1, 0))]
        return x, times, token_lengths, item_index

    # ---- training and scoring

    def encode(self, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, tasks) head outputs at every event's item token, and the item token index."""
        x, times, token_lengths, item_index = self.tokens(batch)
        x = F.dropout(x, self.config.dropout, self.training)
        out = self.stack(x, token_lengths, times)
        return self.head(out[item_index]), item_index

    def loss(self, batch: RankingBatch) -> torch.Tensor:
        """Weighted sum over tasks of the mean loss over events: every event is a target, the
        candidates too (an item token never sees its own actions)."""
        outputs, _ = self.encode(batch)
        return self._task_loss(outputs, batch.actions)

    def _task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        binary = F.binary_cross_entropy_with_logits(outputs, targets.clamp(0, 1), reduction="none")
        regression = (outputs - torch.log1p(targets.clamp(min=0))).square()
        per_task = torch.where(self.is_regression, regression, binary).mean(0)  # (tasks,)
        return (per_task * self.task_weight).sum()

    def forward(self, batch: RankingBatch) -> torch.Tensor:
        """(C, tasks) outputs for each series' candidate: logits for binary tasks, predicted
        log1p(value) for regression ones."""
        outputs, _ = self.encode(batch)
        return outputs[batch.is_candidate]

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        """Probabilities for binary tasks, values for regression ones (expm1 of log1p)."""
        return torch.where(self.is_regression, torch.expm1(outputs).clamp(min=0), torch.sigmoid(outputs))

    @torch.no_grad()
    def score_candidates(
        self,
        history: RankingBatch,
        item_ids: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        timestamps: torch.Tensor | None = None,
        micro_batch: int = 128,
        num_candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """M-FALCON: (m, tasks) outputs for the candidates of B users, as ``forward`` gives them for
        each user's history + [candidate].

        Args:
            history: the users' series (B of them), no candidate in them.
            item_ids: (m,) candidate items, users concatenated; ``features`` their per-event features.
            timestamps: (m,) their times (the request time), default their user's last event's.
            micro_batch: candidates per micro-batch and user.
            num_candidates: (B,) candidates per user (default: one user, all m).
        """
        if bool(history.is_candidate.any()):
            raise ValueError("score_candidates takes histories without candidates")
        if num_candidates is None:
            if len(history) != 1:
                raise ValueError(f"score_candidates: {len(history)} histories need num_candidates per user")
            num_candidates = torch.tensor([item_ids.shape[0]])
        self.eval()
        x, times, token_lengths, _ = self.tokens(history)
        cache = self.stack.cache_history(x, times, lengths=token_lengths)
        if timestamps is None:
            last_event = torch.cumsum(history.lengths, 0) - 1
            timestamps = torch.repeat_interleave(history.timestamps[last_event], num_candidates)
        candidates = self.item_tokens(item_ids, features or {})
        out = self.stack.score_candidates(cache, candidates, timestamps, micro_batch=micro_batch,
                                          num_candidates=num_candidates)
        return self.head(out)
