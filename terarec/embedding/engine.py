"""Sparse-parameter engine: pooled embedding tables whose optimizer runs inside backward.

``FusedPooledEmbeddings`` has the interface of ``collection.PooledEmbeddings`` (KJT of 64-bit ids
-> vocabulary remap -> KeyedTensor (B, F x D)), but its tables are updated during ``backward()``
by a sparse optimizer, row-wise Adagrad by default, so no gradient of a table is ever
materialised and the trainer's dense optimizer never sees the tables.

Why this kernel (measured on this stack: TorchRec 1.8, fbgemm-gpu-cpu 1.8, torch 2.13, 2 cores)
-------------------------------------------------------------------------------------------
- FBGEMM's ``SplitTableBatchedEmbeddingBagsCodegen`` (TBE) with ``ComputeDevice.CPU`` and
  ``EmbeddingLocation.HOST`` trains on CPU with ``EXACT_ROWWISE_ADAGRAD``, ``EXACT_ADAGRAD`` and
  ``EXACT_SGD``; its constructor refuses ``ADAM`` ("not supported in CPU mode"). Weights may be
  FP32 or FP16; BF16 weights construct but the CPU forward raises ("split_embedding_cpu_forward_2
  not implemented for 'BFloat16'"). Only FP32 row-wise Adagrad runs FBGEMM's JIT-compiled,
  multi-threaded kernels (SpMDM for the row gradients, then ``SparseAdaGrad``); FP16 rows and SGD
  take a correct but single-threaded loop.
- TorchRec's ``FusedEmbeddingBagCollection`` wraps the same TBE, but ignores
  ``EmbeddingBagConfig.data_type`` (no FP16 weights), splits the KJT per feature and
  concatenates it again with int32 casts on every step, and keeps the optimizer state out of
  ``state_dict``. ``apply_optimizer_in_backward`` on an unsharded ``EmbeddingBagCollection``
  runs a dense torch optimizer on a dense gradient of the whole table every step.
- So the engine builds one TBE for all its tables and hands it the remapped KJT's values and
  offsets as they are: int64, in the KJT's [F x B] bag layout, which is the TBE's own; no copy.
- What FBGEMM's CPU kernels lack, Adam and BF16 weights, runs on the ``"torch"`` backend: a
  lookup (``F.embedding_bag``) whose backward sums each touched row's gradient over the batch and
  applies FBGEMM's update formula to those rows in place, in fp32 arithmetic. It is slower
  (one Python loop per table) and exists for completeness; ``backend="torch"`` also serves as
  a second implementation to check the FBGEMM one against.

The update rules (``g`` is a row's gradient summed over the batch, every touched row once per step):

- ``rowwise_adagrad`` (FBGEMM's EXACT_ROWWISE_ADAGRAD): ``G += mean(g**2)`` over the row's D
  values (one fp32 accumulator per row), then ``w -= lr * g / (sqrt(G) + eps)``.
- ``sgd`` (EXACT_SGD): ``w -= lr * g``.
- ``adam`` (FBGEMM's GPU ADAM; lazy: only touched rows move): ``m = b1 m + (1-b1) g``,
  ``v = b2 v + (1-b2) g**2``, ``w -= lr * (m / (1-b1**t)) / (sqrt(v / (1-b2**t)) + eps)`` where
  ``t`` counts backward passes.

Contract with the trainer
-------------------------
- The tables are not ``nn.Parameter``s: ``model.parameters()`` yields only dense parameters, so a
  dense torch optimizer built from it skips the tables with no change to the trainer.
  ``fused_parameters()`` lists the live tables for code that needs them (norms, counting).
- ``state_dict()`` holds ``tables.<feature>.weight`` (rows, D) in the weight dtype, the optimizer
  state (``tables.<feature>.momentum`` (rows,) fp32 for row-wise Adagrad; ``exp_avg`` and
  ``exp_avg_sq`` (rows, D) fp32 and ``tables.step`` for Adam) and the vocabularies' buffers;
  all plain tensors, so ``torch.load(..., weights_only=True)`` reads it back. Loading copies into
  the live tables (``load_state_dict(assign=True)`` is not supported).
- Tables live on the CPU, in host memory; ``.to()``, ``.half()`` and the like leave them alone.
- ``reset_rows(feature, rows)`` re-initialises rows (weights and optimizer state) for a managed
  vocabulary that hands evicted rows to new ids.

int8 is for inference only: ``quantize_for_inference`` returns a TorchRec quantised
``EmbeddingBagCollection`` (FBGEMM ``IntNBitTableBatchedEmbeddingBagsCodegen``, rows of D
uint8 plus an fp16 scale and bias) behind the same remap-then-lookup interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
    BoundsCheckMode,
    PoolingMode,
)
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    EmbeddingLocation,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torch import nn
from torchrec import EmbeddingBagConfig
from torchrec.modules.embedding_configs import DataType, PoolingType
from torchrec.quant.embedding_modules import (
    EmbeddingBagCollection as QuantEmbeddingBagCollection,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from terarec.embedding.collection import PooledEmbeddings, remap

SPARSE_OPTIMIZERS = ("rowwise_adagrad", "sgd", "adam")
WEIGHT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BACKENDS = ("auto", "fbgemm", "torch")
# What FBGEMM's CPU training kernels run (see the module docstring).
_FBGEMM_OPTIMIZERS = {"rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "sgd": EmbOptimType.EXACT_SGD}
_FBGEMM_DTYPES = {"fp32": SparseType.FP32, "fp16": SparseType.FP16}
# Optimizer state per table: name -> True for one fp32 value per row, False for one per weight.
_STATE_PER_ROW = {"rowwise_adagrad": {"momentum": True}, "sgd": {}, "adam": {"exp_avg": False, "exp_avg_sq": False}}
_INIT_CHUNK_ROWS = 1 << 20  # initialise big tables a chunk at a time: no full-size fp32 temporary


@dataclass
class EmbeddingEngineConfig:
    """How the sparse tables are stored and trained.

    Args:
        optimizer: ``rowwise_adagrad`` (default), ``sgd`` or ``adam``; runs inside backward.
        learning_rate: step size of the sparse optimizer (``set_learning_rate`` changes it).
        eps: added to the Adagrad / Adam denominator.
        weight_dtype: ``fp32``, ``fp16`` or ``bf16``; optimizer state is fp32 whatever it is.
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay.
        init_std: tables start as N(0, init_std**2), like ``PooledEmbeddings``.
        weight_decay: L2 weight decay (``weight_decay * w`` added to the gradient of each row a
            batch touches; rows not looked up are not decayed). FBGEMM's CPU kernels ignore
            their weight-decay argument (measured with fbgemm-gpu-cpu 1.8), so a non-zero decay
            runs on the torch backend.
        backend: ``auto`` (FBGEMM where its CPU kernels support the optimizer and dtype, that is
            row-wise Adagrad or SGD on fp32 or fp16; otherwise torch), ``fbgemm`` or ``torch``.

    Example:
        >>> EmbeddingEngineConfig(weight_dtype="fp16").resolved_backend()
        'fbgemm'
        >>> EmbeddingEngineConfig(optimizer="adam").resolved_backend()
        'torch'
    """

    optimizer: str = "rowwise_adagrad"
    learning_rate: float = 0.01
    eps: float = 1e-8
    weight_dtype: str = "fp32"
    beta1: float = 0.9
    beta2: float = 0.999
    init_std: float = 0.01
    weight_decay: float = 0.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        choices = {"optimizer": SPARSE_OPTIMIZERS, "weight_dtype": tuple(WEIGHT_DTYPES), "backend": BACKENDS}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(
                    f"EmbeddingEngineConfig.{key}: expected one of {list(valid)}, got {getattr(self, key)!r}"
                )
        for key in ("learning_rate", "eps"):
            if not getattr(self, key) > 0:
                raise ValueError(f"EmbeddingEngineConfig.{key}: expected > 0, got {getattr(self, key)}")
        if self.weight_decay < 0:
            raise ValueError(f"EmbeddingEngineConfig.weight_decay: expected >= 0, got {self.weight_decay}")
        if self.init_std < 0:
            raise ValueError(f"EmbeddingEngineConfig.init_std: expected >= 0, got {self.init_std}")
        if self.backend == "fbgemm" and not self._fbgemm_supports():
            raise ValueError(
                f"EmbeddingEngineConfig.backend: FBGEMM's CPU kernels do not train optimizer={self.optimizer!r} "
                f"with weight_dtype={self.weight_dtype!r} and weight_decay={self.weight_decay}: they support "
                f"{list(_FBGEMM_OPTIMIZERS)} on {list(_FBGEMM_DTYPES)} without weight decay; "
                "use backend 'torch' or 'auto'"
            )

    def _fbgemm_supports(self) -> bool:
        return self.optimizer in _FBGEMM_OPTIMIZERS and self.weight_dtype in _FBGEMM_DTYPES and not self.weight_decay

    def resolved_backend(self) -> str:
        """The backend that runs: ``fbgemm`` or ``torch``."""
        if self.backend != "auto":
            return self.backend
        return "fbgemm" if self._fbgemm_supports() else "torch"


class DirectRows(nn.Module):
    """A stand-in vocabulary for features whose ids already are rows ``0 .. num_rows - 1``.

    No id is remapped or stored (0 bytes per row); an id outside the table is an error raised
    by the lookup, never a silent wrong row.

    Args:
        num_rows: rows of the table.
    """

    def __init__(self, num_rows: int) -> None:
        super().__init__()
        if num_rows < 1:
            raise ValueError(f"DirectRows.num_rows: expected >= 1, got {num_rows}")
        self.num_rows = int(num_rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return ids


class _LookupThenUpdate(torch.autograd.Function):
    """The torch backend's lookup: sum-pooled rows forward; backward updates the touched rows in place."""

    @staticmethod
    def forward(ctx, placeholder, tables, values, offsets, batch_size):
        pooled = []
        for table, weight in enumerate(tables._weights):
            begin, end = int(offsets[table * batch_size]), int(offsets[(table + 1) * batch_size])
            bag_offsets = offsets[table * batch_size : (table + 1) * batch_size] - begin
            pooled.append(F.embedding_bag(values[begin:end], weight, bag_offsets, mode="sum").float())
        ctx.tables, ctx.batch_size = tables, batch_size
        ctx.save_for_backward(values, offsets)
        return torch.cat(pooled, dim=1)  # (B, T * D)

    @staticmethod
    def backward(ctx, grad_output):
        values, offsets = ctx.saved_tensors
        tables, batch_size, dim = ctx.tables, ctx.batch_size, ctx.tables.embedding_dim
        lengths = offsets.diff()
        tables._step += 1
        for table in range(len(tables._weights)):
            begin, end = int(offsets[table * batch_size]), int(offsets[(table + 1) * batch_size])
            if begin == end:
                continue
            bag_lengths = lengths[table * batch_size : (table + 1) * batch_size]
            bags = torch.repeat_interleave(torch.arange(batch_size), bag_lengths)
            id_grads = grad_output[:, table * dim : (table + 1) * dim].float()[bags]  # (nnz, D)
            rows, position = torch.unique(values[begin:end], return_inverse=True)
            row_grads = torch.zeros(rows.numel(), dim).index_add_(0, position, id_grads)  # (U, D)
            tables._update(table, rows, row_grads)
        return None, None, None, None, None


class FusedTables(nn.Module):
    """The tables of a FusedPooledEmbeddings and their optimizer state: (values, offsets) -> (B, T x D).

    Holds the FBGEMM TBE (or the torch backend's tensors) out of ``parameters()`` and
    ``buffers()``; ``state_dict`` gives ``<feature>.weight`` and ``<feature>.<state>`` views of
    the live storage (see the module docstring).

    Args:
        feature_names: one table per feature, in this order.
        num_rows: rows of each table.
        embedding_dim: width of every table.
        config: dtype and optimizer.
    """

    def __init__(
        self, feature_names: list[str], num_rows: list[int], embedding_dim: int, config: EmbeddingEngineConfig
    ) -> None:
        super().__init__()
        self.feature_names = list(feature_names)
        self.embedding_dim = embedding_dim
        self.config = config
        self.backend = config.resolved_backend()
        self._kernel: list[SplitTableBatchedEmbeddingBagsCodegen] = []  # a list: not a registered submodule
        if self.backend == "fbgemm":
            kernel = SplitTableBatchedEmbeddingBagsCodegen(
                [(rows, embedding_dim, EmbeddingLocation.HOST, ComputeDevice.CPU) for rows in num_rows],
                optimizer=_FBGEMM_OPTIMIZERS[config.optimizer],
                weights_precision=_FBGEMM_DTYPES[config.weight_dtype],
                output_dtype=SparseType.FP32,
                learning_rate=config.learning_rate,
                eps=config.eps,
                pooling_mode=PoolingMode.SUM,
                bounds_check_mode=BoundsCheckMode.FATAL,
            )
            self._kernel.append(kernel)
            self._weights = kernel.split_embedding_weights()  # views of kernel.weights_host
            optimizer_states = kernel.split_optimizer_states()
            self._states = {
                name: [states[i] for states in optimizer_states]
                for i, name in enumerate(_STATE_PER_ROW[config.optimizer])
            }
        else:
            dtype = WEIGHT_DTYPES[config.weight_dtype]
            self._weights = [torch.zeros(rows, embedding_dim, dtype=dtype) for rows in num_rows]
            self._states = {
                name: [torch.zeros(rows) if per_row else torch.zeros(rows, embedding_dim) for rows in num_rows]
                for name, per_row in _STATE_PER_ROW[config.optimizer].items()
            }
            # Backward is only called for a graph with an input that requires grad: this one.
            self._placeholder = torch.zeros(0, requires_grad=True)
        self._step = torch.zeros((), dtype=torch.int64)  # backward passes, for Adam's bias correction
        for weight in self._weights:
            _normal_(weight, config.init_std)

    # ------------------------------------------------------------------ lookup and update

    def forward(self, values: torch.Tensor, offsets: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Sum-pooled rows: ``values`` are rows, ``offsets`` (T x B + 1) the [table x bag] layout."""
        if self.backend == "fbgemm":
            return self._kernel[0](indices=values, offsets=offsets)
        return _LookupThenUpdate.apply(self._placeholder, self, values, offsets, batch_size)

    @torch.no_grad()
    def _update(self, table: int, rows: torch.Tensor, row_grads: torch.Tensor) -> None:
        """Apply the optimizer to ``rows`` (unique) of one table, given their summed gradients (U, D)."""
        config, weight = self.config, self._weights[table]
        new_rows = weight[rows].float()
        if config.weight_decay:
            row_grads = row_grads + config.weight_decay * new_rows
        if config.optimizer == "sgd":
            new_rows -= config.learning_rate * row_grads
        elif config.optimizer == "rowwise_adagrad":
            momentum = self._states["momentum"][table]
            row_momentum = momentum[rows] + row_grads.square().mean(dim=1)
            momentum[rows] = row_momentum
            new_rows -= config.learning_rate * row_grads / (row_momentum.sqrt() + config.eps).unsqueeze(1)
        else:
            step = int(self._step)
            exp_avg, exp_avg_sq = self._states["exp_avg"][table], self._states["exp_avg_sq"][table]
            row_avg = exp_avg[rows].mul_(config.beta1).add_(row_grads, alpha=1 - config.beta1)
            row_avg_sq = exp_avg_sq[rows].mul_(config.beta2)
            row_avg_sq.addcmul_(row_grads, row_grads, value=1 - config.beta2)
            exp_avg[rows], exp_avg_sq[rows] = row_avg, row_avg_sq
            denominator = (row_avg_sq / (1 - config.beta2**step)).sqrt_() + config.eps
            new_rows -= config.learning_rate * (row_avg / (1 - config.beta1**step)) / denominator
        weight[rows] = new_rows.to(weight.dtype)

    def set_learning_rate(self, learning_rate: float) -> None:
        self.config.learning_rate = float(learning_rate)
        if self._kernel:
            self._kernel[0].set_learning_rate(float(learning_rate))

    # ------------------------------------------------------------------ state

    def weight(self, feature: str) -> torch.Tensor:
        """The live table of ``feature`` (rows, D): writes go to the table."""
        return self._weights[self._table(feature)]

    def optimizer_state(self, feature: str) -> dict[str, torch.Tensor]:
        """The live optimizer state of ``feature``'s table: name -> tensor."""
        table = self._table(feature)
        return {name: tensors[table] for name, tensors in self._states.items()}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything ``state_dict`` saves, keyed without prefix: live views."""
        tensors: dict[str, torch.Tensor] = {}
        for table, name in enumerate(self.feature_names):
            tensors[f"{name}.weight"] = self._weights[table]
            for state, per_table in self._states.items():
                tensors[f"{name}.{state}"] = per_table[table]
        if self.config.optimizer == "adam":
            tensors["step"] = self._step
        return tensors

    @torch.no_grad()
    def reset_rows(self, feature: str, rows: torch.Tensor, std: float | None = None) -> None:
        """Re-initialise ``rows`` of ``feature``: weights to N(0, std**2) (default init_std), optimizer state to 0."""
        table = self._table(feature)
        weight = self._weights[table]
        rows = torch.as_tensor(rows, dtype=torch.int64).flatten()
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= weight.shape[0]):
            raise IndexError(
                f"reset_rows('{feature}'): rows must be in [0, {weight.shape[0]}), "
                f"got min {int(rows.min())} and max {int(rows.max())}"
            )
        std = self.config.init_std if std is None else std
        weight[rows] = (torch.randn(rows.numel(), weight.shape[1]) * std).to(weight.dtype)
        for per_table in self._states.values():
            per_table[table][rows] = 0

    def _table(self, feature: str) -> int:
        if feature not in self.feature_names:
            raise KeyError(f"feature '{feature}': not one of this engine's tables {self.feature_names}")
        return self.feature_names.index(feature)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        for key, tensor in self.state_tensors().items():
            destination[prefix + key] = tensor.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        own = self.state_tensors()
        for key, tensor in own.items():
            value = state_dict.get(prefix + key)
            if value is None:
                missing_keys.append(prefix + key)
            elif value.shape != tensor.shape:
                error_msgs.append(f"{prefix + key}: expected shape {tuple(tensor.shape)}, got {tuple(value.shape)}")
            else:
                with torch.no_grad():
                    tensor.copy_(value)
        if strict:
            unexpected_keys.extend(
                key for key in state_dict if key.startswith(prefix) and key.removeprefix(prefix) not in own
            )

    def _apply(self, fn, recurse=True):
        # The tables are host memory shared with the kernel; casting or moving copies would detach them.
        return self

    def extra_repr(self) -> str:
        rows = [weight.shape[0] for weight in self._weights]
        config = self.config
        return (
            f"backend={self.backend}, optimizer={config.optimizer}, weight_dtype={config.weight_dtype}, "
            f"dim={self.embedding_dim}, rows={dict(zip(self.feature_names, rows))}"
        )


class FusedPooledEmbeddings(nn.Module):
    """One table per sparse feature, sum-pooled, trained by a sparse optimizer inside backward.

    KJT of 64-bit ids -> vocabulary remap -> KeyedTensor (B, F x D), like ``PooledEmbeddings``.
    The tables are updated when ``backward()`` runs; they are not in ``parameters()``, so the
    trainer's dense optimizer (built from ``model.parameters()``) never touches them, and there
    is no ``step()`` to call for them. See the module docstring for dtypes and backends.

    Args:
        vocabularies: feature name -> its vocabulary (``ExactVocabulary``, a managed vocabulary,
            or ``DirectRows`` for ids that already are rows); sizes the tables.
        embedding_dim: width of every table.
        config: optimizer, learning rate, weight dtype (default: row-wise Adagrad, lr 0.01, fp32).

    Example:
        >>> from terarec.embedding.exact_vocabulary import ExactVocabulary
        >>> vocab = ExactVocabulary(torch.tensor([10, 20, 30]))
        >>> config = EmbeddingEngineConfig(weight_dtype="fp16")
        >>> emb = FusedPooledEmbeddings({"item_id": vocab}, 8, config)
        >>> ids, lengths = torch.tensor([10, 30]), torch.tensor([2])
        >>> pooled = emb(KeyedJaggedTensor.from_lengths_sync(["item_id"], ids, lengths))
        >>> pooled.values().shape
        torch.Size([1, 8])
        >>> pooled.values().sum().backward()  # updates rows 1 and 3 in place
    """

    def __init__(
        self, vocabularies: dict[str, nn.Module], embedding_dim: int, config: EmbeddingEngineConfig | None = None
    ) -> None:
        super().__init__()
        if not vocabularies:
            raise ValueError("FusedPooledEmbeddings: expected at least one feature in vocabularies")
        if embedding_dim < 1:
            raise ValueError(f"FusedPooledEmbeddings.embedding_dim: expected >= 1, got {embedding_dim}")
        self.feature_names = list(vocabularies)
        self.embedding_dim = embedding_dim
        self.config = config or EmbeddingEngineConfig()
        self.vocabularies = nn.ModuleDict(vocabularies)
        num_rows = [vocab.num_rows for vocab in vocabularies.values()]
        self.tables = FusedTables(self.feature_names, num_rows, embedding_dim, self.config)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        if features.keys() != self.feature_names:
            keys = features.keys()
            missing = [name for name in self.feature_names if name not in keys]
            if missing:
                raise KeyError(f"FusedPooledEmbeddings: features {missing} are not in the batch's keys {keys}")
            features = features.permute([keys.index(name) for name in self.feature_names])
        rows = remap(features, self.vocabularies)
        if self.training:
            self._reset_reassigned_rows()
        values = rows.values()
        offsets = rows.offsets().to(values.dtype)  # the kernel wants one integer type for both
        pooled = self.tables(values, offsets, rows.stride())  # (B, F * D)
        return KeyedTensor(
            keys=self.feature_names,
            length_per_key=[self.embedding_dim] * len(self.feature_names),
            values=pooled,
        )

    def _reset_reassigned_rows(self) -> None:
        """Rows a managed vocabulary just gave to new ids start fresh (weights and optimizer state)."""
        for name, vocabulary in self.vocabularies.items():
            new_rows = getattr(vocabulary, "last_new_rows", None)
            if new_rows is not None and new_rows.numel():
                self.tables.reset_rows(name, new_rows)

    def fused_parameters(self) -> list[torch.Tensor]:
        """The live tables, one per feature: updated in backward, not in ``parameters()``."""
        return [self.tables.weight(name) for name in self.feature_names]

    def weight(self, feature: str) -> torch.Tensor:
        """The live table of ``feature`` (rows, D), in the weight dtype."""
        return self.tables.weight(feature)

    def optimizer_state(self, feature: str) -> dict[str, torch.Tensor]:
        """The live optimizer state of ``feature``: ``momentum`` (rows,) for row-wise Adagrad; Adam's moments."""
        return self.tables.optimizer_state(feature)

    def reset_rows(self, feature: str, rows: torch.Tensor, std: float | None = None) -> None:
        """Re-initialise rows a managed vocabulary hands to new ids: weights ~ N(0, std**2), optimizer state 0.

        Args:
            feature: the table's feature name.
            rows: row numbers (any integer tensor or sequence).
            std: standard deviation of the new weights (default: ``config.init_std``).
        """
        self.tables.reset_rows(feature, rows, std)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Change the sparse optimizer's learning rate (for a schedule)."""
        self.tables.set_learning_rate(learning_rate)


# ----------------------------------------------------------------------------- int8 inference


class QuantizedPooledEmbeddings(nn.Module):
    """Inference-only pooled tables in int8: KJT of 64-bit ids -> remap -> KeyedTensor (B, F x D) in fp32.

    Made by ``quantize_for_inference``; it shares the source module's vocabularies. Each row is
    D uint8 codes plus an fp16 scale and bias (row-wise asymmetric quantisation), looked up by
    TorchRec's quantised EmbeddingBagCollection on FBGEMM's CPU kernel.

    Args:
        vocabularies: feature name -> vocabulary.
        tables: the TorchRec quantised collection, one table ``t_<feature>`` per feature.
    """

    def __init__(self, vocabularies: nn.ModuleDict, tables: QuantEmbeddingBagCollection) -> None:
        super().__init__()
        self.feature_names = list(vocabularies)
        self.vocabularies = vocabularies
        self.tables = tables

    @torch.no_grad()
    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        if features.keys() != self.feature_names:
            features = features.permute([features.keys().index(name) for name in self.feature_names])
        return self.tables(remap(features, self.vocabularies))


def quantize_for_inference(
    embeddings: FusedPooledEmbeddings | PooledEmbeddings, row_alignment: int = 1
) -> QuantizedPooledEmbeddings:
    """Row-wise int8 copy of trained pooled tables (fp32, fp16 or bf16), for inference.

    Rows are quantised a chunk at a time (FBGEMM ``FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf``),
    so the only full-size temporary is the int8 table itself. The error of one value is at most
    half a step, ``(row max - row min) / 255 / 2``, plus the fp16 rounding of scale and bias.

    Args:
        embeddings: a trained ``FusedPooledEmbeddings`` or ``PooledEmbeddings``.
        row_alignment: bytes each int8 row is padded to. 1 (default) keeps rows at D + 4 bytes
            as the memory planner counts them; TorchRec's default, 16, pads (a 16-dim row to 32 B).

    Example:
        >>> from terarec.embedding.exact_vocabulary import ExactVocabulary
        >>> trained = FusedPooledEmbeddings({"item_id": ExactVocabulary(torch.arange(10))}, 8)
        >>> features = KeyedJaggedTensor.from_lengths_sync(["item_id"], torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        >>> quantized = quantize_for_inference(trained)
        >>> quantized(features).values().shape  # (B, F * D) fp32
        torch.Size([2, 8])
    """
    if isinstance(embeddings, FusedPooledEmbeddings):
        weights = {name: embeddings.weight(name) for name in embeddings.feature_names}
    elif isinstance(embeddings, PooledEmbeddings):
        bags = embeddings.tables.embedding_bags
        weights = {name: bags[f"t_{name}"].weight for name in embeddings.feature_names}
    else:
        raise TypeError(
            "quantize_for_inference: expected FusedPooledEmbeddings or PooledEmbeddings, "
            f"got {type(embeddings).__name__}"
        )
    configs, quantized = [], {}
    for name, weight in weights.items():
        rows, dim = weight.shape
        table = f"t_{name}"
        configs.append(
            EmbeddingBagConfig(
                name=table,
                embedding_dim=dim,
                num_embeddings=rows,
                feature_names=[name],
                pooling=PoolingType.SUM,
                data_type=DataType.INT8,
            )
        )
        codes = torch.empty(rows, dim + 4, dtype=torch.uint8)  # D codes, then fp16 scale and bias
        with torch.no_grad():
            for begin in range(0, rows, _INIT_CHUNK_ROWS):
                chunk = weight[begin : begin + _INIT_CHUNK_ROWS].detach()
                if chunk.dtype not in (torch.float32, torch.float16):
                    chunk = chunk.float()
                quantize = torch.ops.fbgemm.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf
                codes[begin : begin + _INIT_CHUNK_ROWS] = quantize(chunk.contiguous(), 8)
        quantized[table] = (codes[:, :dim], codes[:, dim:])
    tables = QuantEmbeddingBagCollection(
        tables=configs,
        is_weighted=False,
        device=torch.device("cpu"),
        output_dtype=torch.float,
        table_name_to_quantized_weights=quantized,
        row_alignment=row_alignment,
    )
    # The collection keeps the dict it was built from (only sharding reads it); drop it so the
    # int8 rows are held once, in the kernel.
    tables._table_name_to_quantized_weights = None
    return QuantizedPooledEmbeddings(embeddings.vocabularies, tables)


# ----------------------------------------------------------------------------- helpers


@torch.no_grad()
def _normal_(weight: torch.Tensor, std: float) -> None:
    """Fill a (possibly huge, possibly fp16) table with N(0, std**2) a chunk of rows at a time."""
    for begin in range(0, weight.shape[0], _INIT_CHUNK_ROWS):
        weight[begin : begin + _INIT_CHUNK_ROWS].normal_(0.0, std)
