"""The multi-layer perceptron every model shares."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """Linear (-> batch norm) -> activation (-> dropout) per hidden width, then an optional output layer.

    Args:
        in_features: input width.
        hidden: hidden widths, in order.
        out_features: width of a final linear layer without activation (None: no such layer).
        dropout: dropout after each hidden activation.
        activation: activation module class.
        batch_norm: batch normalisation between each hidden Linear and its activation (the
            usual CTR-model recipe, e.g. FuxiCTR's ``batch_norm: True``).

    Example:
        >>> import torch
        >>> MLP(8, [16, 16], out_features=1)(torch.zeros(4, 8)).shape
        torch.Size([4, 1])
    """

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        out_features: int | None = None,
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.ReLU,
        batch_norm: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(activation())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        if out_features is not None:
            layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.out_features = out_features if out_features is not None else width
