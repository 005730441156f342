"""The built-in N-D architectures of ``unified.archs`` as torch modules.

``build_torch(plan)`` builds the module and loads ``plan.weights`` with ``load_state_dict(strict=True)``:
the weights' names are the modules' ``state_dict`` names. Inputs are the canonical arrays: images
``N, C, H, W`` float; sequences ``N, T, F`` float or ``N, T`` int64 token ids. Outputs ``[N, out_features]``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from unified.archs import (
    BN_MOMENTUM, NORM_EPS, ArchPlan, CNNParams, ResNetParams, RNNParams, TransformerParams, cnn_feature_shape,
    resnet_blocks, resnet_projects, resnet_stages, rnn_input_size,
)
from unified.errors import NotSupportedError

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - the registry checks first
    from unified.errors import BackendUnavailableError

    raise BackendUnavailableError(f'PyTorch is not installed: pip install "unified-trainer[ignite]" ({e})') from e


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=NORM_EPS, momentum=BN_MOMENTUM)


class CNN(nn.Module):
    """``cnn``: [Conv2d(same) -> BatchNorm2d? -> ReLU -> MaxPool2d] per channel entry, flatten (C, H, W order),
    [Dropout -> Linear -> ReLU] per hidden width, Dropout -> Linear.

    ``state_dict``: ``conv.<i>.*``, ``bn.<i>.*`` (with batch norm; the convs then have no bias), ``fc.<j>.*``.
    """

    def __init__(self, p: CNNParams, in_shape: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        chans = [in_shape[0], *p.channels]
        self.conv = nn.ModuleList(nn.Conv2d(a, b, p.kernel_size, padding="same", bias=not p.batch_norm)
                                  for a, b in zip(chans[:-1], chans[1:]))
        self.bn = nn.ModuleList(_bn(c) for c in p.channels) if p.batch_norm else None
        self.pool = nn.MaxPool2d(p.pool) if p.pool > 1 else nn.Identity()
        widths = [int(np.prod(cnn_feature_shape(p, in_shape))), *p.hidden, out_features]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.drop = nn.Dropout(p.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.conv):
            x = conv(x)
            if self.bn is not None:
                x = self.bn[i](x)
            x = self.pool(torch.relu(x))
        x = torch.flatten(x, 1)
        for j, fc in enumerate(self.fc):
            x = fc(self.drop(x))
            if j < len(self.fc) - 1:
                x = torch.relu(x)
        return x


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block: conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU.

    The shortcut is the identity, or a 1x1 conv(stride) + BN (``proj_conv``, ``proj_bn``) where the shape changes.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _bn(c_out)
        self.project = resnet_projects(c_in, c_out, stride)
        if self.project:
            self.proj_conv = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            self.proj_bn = _bn(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = self.proj_bn(self.proj_conv(x)) if self.project else x
        return torch.relu(y + shortcut)


class _Stem(nn.Module):
    def __init__(self, c_in: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, width, 3, padding=1, bias=False)
        self.bn = _bn(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ResNet(nn.Module):
    """``resnet``: stem conv3x3 -> 3 stages of (depth - 2) / 6 basic blocks (width w, 2w, 4w; strides 1, 2, 2)
    -> global average pool -> Linear.  ``state_dict``: ``stem.*``, ``stages.<s>.<b>.*``, ``fc.*``.
    """

    def __init__(self, p: ResNetParams, in_shape: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        self.stem = _Stem(in_shape[0], p.width)
        stages = []
        c_in = p.width
        for c, stride in resnet_stages(p):
            blocks = []
            for b in range(resnet_blocks(p.depth)):
                blocks.append(BasicBlock(c_in, c, stride if b == 0 else 1))
                c_in = c
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


class RecurrentNet(nn.Module):
    """``lstm`` / ``gru``: [Embedding] -> nn.LSTM / nn.GRU (batch_first) -> last hidden state -> Linear.

    The representation is the top layer's forward output at the last step, concatenated (bidirectional)
    with its backward output at the first step (the backward pass's final state), i.e. torch's ``h_n``.
    ``state_dict``: ``embed.weight``, ``rnn.{weight,bias}_{ih,hh}_l<k>[_reverse]``, ``fc.*``.
    """

    def __init__(self, arch: str, p: RNNParams, in_shape: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(p.vocab_size, p.embed_dim) if p.vocab_size is not None else None
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[arch]
        self.rnn = rnn_cls(rnn_input_size(p, in_shape), p.hidden_size, num_layers=p.num_layers, batch_first=True,
                           bidirectional=p.bidirectional, dropout=p.dropout if p.num_layers > 1 else 0.0)
        self.hidden_size = p.hidden_size
        self.bidirectional = p.bidirectional
        self.fc = nn.Linear(p.hidden_size * (2 if p.bidirectional else 1), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            x = self.embed(x)
        out, _ = self.rnn(x)
        h = out[:, -1, :self.hidden_size]
        if self.bidirectional:
            h = torch.cat([h, out[:, 0, self.hidden_size:]], dim=1)
        return self.fc(h)


class TransformerNet(nn.Module):
    """``transformer``: Embedding (token ids) or Linear (float features) + learned positions -> pre-norm
    nn.TransformerEncoderLayer x num_layers -> LayerNorm -> mean over time -> Linear.

    ``state_dict``: ``embed.weight`` | ``input_proj.*``, ``pos_embed.weight``, ``layers.<i>.*`` (torch's
    encoder-layer names), ``norm.*``, ``fc.*``.
    """

    def __init__(self, p: TransformerParams, in_shape: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        d = p.d_model
        if p.vocab_size is not None:
            self.embed = nn.Embedding(p.vocab_size, d)
        else:
            self.input_proj = nn.Linear(in_shape[-1], d)
        self.token_ids = p.vocab_size is not None
        self.pos_embed = nn.Embedding(p.max_len, d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, p.num_heads, p.dim_feedforward, dropout=p.dropout, activation=p.activation,
                                       layer_norm_eps=NORM_EPS, batch_first=True, norm_first=True)
            for _ in range(p.num_layers))
        self.norm = nn.LayerNorm(d, eps=NORM_EPS)
        self.fc = nn.Linear(d, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) if self.token_ids else self.input_proj(x)
        x = x + self.pos_embed.weight[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.fc(self.norm(x).mean(dim=1))


_BUILDERS: dict[str, Callable[[ArchPlan], nn.Module]] = {
    "cnn": lambda plan: CNN(plan.params, plan.in_shape, plan.out_features),
    "resnet": lambda plan: ResNet(plan.params, plan.in_shape, plan.out_features),
    "lstm": lambda plan: RecurrentNet("lstm", plan.params, plan.in_shape, plan.out_features),
    "gru": lambda plan: RecurrentNet("gru", plan.params, plan.in_shape, plan.out_features),
    "transformer": lambda plan: TransformerNet(plan.params, plan.in_shape, plan.out_features),
}


def build_torch(plan: ArchPlan) -> nn.Module:
    """The torch module of ``plan`` with ``plan.weights`` loaded (``load_state_dict(strict=True)``).

    Args:
        plan: an :class:`unified.archs.ArchPlan` (see ``unified.archs.build_arch_plan``).

    Returns:
        A module taking the canonical input (``N,C,H,W`` float, ``N,T,F`` float or ``N,T`` int64) and
        returning ``[N, out_features]`` logits, in training mode (call ``.eval()`` for inference).
    """
    if plan.arch not in _BUILDERS:
        raise NotSupportedError(f"model.arch: {plan.arch!r} has no torch build")
    model = _BUILDERS[plan.arch](plan)
    load_state(model, plan.weights)
    return model


def load_state(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    """Load numpy weights (``state_dict`` names) into ``model``, strictly."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The module's ``state_dict`` as numpy arrays (copies)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
