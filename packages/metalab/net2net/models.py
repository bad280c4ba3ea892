"""Small networks to grow: MLPs, CNNs and residual blocks with stable layer names."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from metalab.core.errors import ConfigError

__all__ = ["Residual", "mlp", "residual_cnn", "small_cnn"]


class Residual(nn.Module):
    """``body(x) + shortcut(x)`` (the shortcut defaults to the identity)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return self.body(x) + self.shortcut(x)


def _check_widths(widths: Sequence[int], what: str) -> None:
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ConfigError(f"{what} must be a non-empty list of positive ints, got {list(widths)}")


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    norm: str | None = None,
    activation: type[nn.Module] = nn.ReLU,
    dropout: float = 0.0,
) -> nn.Sequential:
    """``fc1, [bn1|ln1], act1, ..., out``: hidden Linear layers ``fc{i}`` then ``out``.

    Args:
        in_features: input features (images are flattened first).
        hidden: widths of the hidden layers.
        out_features: outputs (classes).
        norm: ``None``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm) after each layer.
        activation: activation class (ReLU for Net2DeeperNet).
        dropout: dropout probability after each activation.
    """
    _check_widths(hidden, "hidden")
    if norm not in (None, "batch", "layer"):
        raise ConfigError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = in_features
    for i, h in enumerate(hidden, start=1):
        layers[f"fc{i}"] = nn.Linear(width, h)
        if norm == "batch":
            layers[f"bn{i}"] = nn.BatchNorm1d(h)
        elif norm == "layer":
            layers[f"ln{i}"] = nn.LayerNorm(h)
        layers[f"act{i}"] = activation()
        if dropout:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = h
    layers["out"] = nn.Linear(width, out_features)
    return nn.Sequential(layers)


def small_cnn(
    in_channels: int,
    channels: Sequence[int],
    num_classes: int,
    *,
    image_size: int,
    batchnorm: bool = True,
    hidden: int = 0,
) -> nn.Sequential:
    """``conv{i}, [bn{i}], act{i}, pool{i}`` blocks; ``flatten``, [``fc``, ``fc_act``], ``out``.

    Each block halves the image (2x2 max pooling); the last conv's channels reach the
    Linear head through ``flatten`` (each channel is a block of spatial positions).
    """
    _check_widths(channels, "channels")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width, size = in_channels, image_size
    for i, c in enumerate(channels, start=1):
        layers[f"conv{i}"] = nn.Conv2d(width, c, 3, padding=1)
        if batchnorm:
            layers[f"bn{i}"] = nn.BatchNorm2d(c)
        layers[f"act{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        width, size = c, size // 2
    if size < 1:
        raise ConfigError(f"image_size {image_size} is too small for {len(channels)} poolings")
    layers["flatten"] = nn.Flatten()
    features = width * size * size
    if hidden:
        layers["fc"] = nn.Linear(features, hidden)
        layers["fc_act"] = nn.ReLU()
        features = hidden
    layers["out"] = nn.Linear(features, num_classes)
    return nn.Sequential(layers)


def residual_cnn(
    in_channels: int, width: int, inner: int, num_classes: int, *, blocks: int = 1
) -> nn.Sequential:
    """``stem`` conv, ``blocks`` residual blocks ``conv-bn-relu-conv-bn (+x)``, pooled head.

    The inner convolutions (``block{i}.body.conv1``) can be widened and deepened; the
    residual stream's width (``stem``, ``conv2``) cannot without growing the other branch.
    """
    _check_widths([width, inner, blocks], "width, inner and blocks")
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Conv2d(in_channels, width, 3, padding=1),
        stem_bn=nn.BatchNorm2d(width),
        stem_act=nn.ReLU(),
    )
    for i in range(1, blocks + 1):
        body = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(width, inner, 3, padding=1),
                bn1=nn.BatchNorm2d(inner),
                act1=nn.ReLU(),
                conv2=nn.Conv2d(inner, width, 3, padding=1),
                bn2=nn.BatchNorm2d(width),
            )
        )
        layers[f"block{i}"] = Residual(body)
        layers[f"block{i}_act"] = nn.ReLU()
    layers["pool"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["out"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)
