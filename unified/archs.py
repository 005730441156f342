"""Built-in N-D architectures (cnn, resnet, lstm, gru, transformer): parameters, checks, initial weights.

Backend-neutral, numpy only (never imports a framework). An :class:`ArchPlan` describes one built-in
network for one input shape: its parameters plus initial weights drawn once from the seed, named and laid
out as the ``state_dict`` of the torch module ``unified.adapters.torch_archs`` builds. The Keras build
(``unified.adapters.keras_archs``) loads the very same arrays, so both frameworks start from identical
weights and give the same outputs.

Canonical per-sample input shapes: images ``(C, H, W)``; sequences ``(T, F)`` float, or ``(T,)`` integer
token ids when ``vocab_size`` is set. Every network returns ``[N, out_features]`` logits.

The single list of architectures is :data:`ARCHS`; everything else (the torch and Keras builders, the
docs and tests) derives from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from unified.errors import SpecError

_INIT_STREAM = 1  # numpy stream id for initial weights (as unified.models: 0 split, 1 init, 2 batch order)
BN_MOMENTUM = 0.1  # torch convention (new = (1 - m) * old + m * batch); Keras momentum = 1 - this
NORM_EPS = 1e-5  # torch's default epsilon of BatchNorm2d and LayerNorm
ACTIVATIONS = ("relu", "gelu")  # transformer feed-forward activation (gelu: the exact erf form)

Shape = tuple[int, ...]
Weights = dict[str, np.ndarray]


# -- parameters (the spec's ``model.*`` fields per arch, with DESIGN.md's defaults) ---------------------


@dataclass
class CNNParams:
    """``arch: cnn``: conv blocks (conv -> [batch norm] -> ReLU -> max pool), flatten, dense head."""

    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    pool: int = 2
    batch_norm: bool = True
    dropout: float = 0.0
    hidden: list[int] = field(default_factory=lambda: [128])


@dataclass
class ResNetParams:
    """``arch: resnet``: CIFAR-style ResNet-(6n+2), three stages of basic blocks, global average pool."""

    depth: int = 8
    width: int = 16


@dataclass
class RNNParams:
    """``arch: lstm | gru``: [embedding] -> stacked recurrent layers -> last hidden state -> linear."""

    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    vocab_size: Optional[int] = None
    embed_dim: int = 32
    dropout: float = 0.0


@dataclass
class TransformerParams:
    """``arch: transformer``: embedding or input projection + learned positions, pre-norm encoder, mean pool."""

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    dim_feedforward: int = 128
    vocab_size: Optional[int] = None
    max_len: int = 512
    dropout: float = 0.0
    activation: str = "relu"


Params = Union[CNNParams, ResNetParams, RNNParams, TransformerParams]


@dataclass
class ArchPlan:
    """A built-in N-D network for one input shape, with its initial weights (numpy, PyTorch layout).

    Attributes:
        arch: one of :data:`ARCHS`.
        params: the arch's parameter dataclass.
        in_shape: one sample's shape: ``(C, H, W)``, ``(T, F)`` or ``(T,)`` (token ids).
        out_features: width of the output logits.
        weights: ``state_dict`` name -> array of the torch module (float32; BatchNorm's
            ``num_batches_tracked`` is an int64 scalar).
    """

    arch: str
    params: Params
    in_shape: Shape
    out_features: int
    weights: Weights = field(default_factory=dict)

    @property
    def token_ids(self) -> bool:
        """Whether the inputs are integer token ids (``N, T``) rather than floats."""
        return getattr(self.params, "vocab_size", None) is not None

    @property
    def input_dtype(self) -> str:
        """The dtype of the canonical input array: ``"int64"`` for token ids, else ``"float32"``."""
        return "int64" if self.token_ids else "float32"


# -- shape helpers ----------------------------------------------------------------------------------------


def cnn_feature_shape(params: CNNParams, in_shape: Shape) -> Shape:
    """``(C, H, W)`` after the conv blocks (``same`` convs; each block's pool floors H and W by ``pool``)."""
    _, h, w = in_shape
    for _ in params.channels:
        if params.pool > 1:
            h, w = h // params.pool, w // params.pool
    return (params.channels[-1], h, w)


def resnet_blocks(depth: int) -> int:
    """Basic blocks per stage of a CIFAR ResNet of ``depth`` layers (depth = 6n + 2)."""
    return (depth - 2) // 6


def resnet_stages(params: ResNetParams) -> list[tuple[int, int]]:
    """(width, first stride) of the three stages: (w, 1), (2w, 2), (4w, 2)."""
    return [(params.width, 1), (2 * params.width, 2), (4 * params.width, 2)]


def rnn_input_size(params: RNNParams, in_shape: Shape) -> int:
    """Width of the recurrent layers' input: ``embed_dim`` for token ids, else the feature count F."""
    return params.embed_dim if params.vocab_size is not None else in_shape[-1]


# -- validation -------------------------------------------------------------------------------------------


def _fail(field_name: str, message: str) -> SpecError:
    return SpecError(message, path=f"model.{field_name}")


def _positive_int(p: Any, name: str, *, allow_none: bool = False) -> None:
    v = getattr(p, name)
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise _fail(name, f"must be a positive integer{' or null' if allow_none else ''}, got {v!r}")


def _int_list(p: Any, name: str, *, allow_empty: bool) -> None:
    v = getattr(p, name)
    ok = isinstance(v, (list, tuple)) and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c >= 1 for c in v)
    if not ok or (not v and not allow_empty):
        what = "a list of positive integers" + ("" if allow_empty else " (at least one)")
        raise _fail(name, f"must be {what}, got {v!r}")


def _probability(p: Any, name: str) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise _fail(name, f"must be a number in [0, 1), got {v!r}")


def _boolean(p: Any, name: str) -> None:
    if not isinstance(getattr(p, name), bool):
        raise _fail(name, f"must be true or false, got {getattr(p, name)!r}")


def _image_input(arch: str, in_shape: Shape) -> None:
    if len(in_shape) != 3:
        raise _fail("arch", f"{arch} takes images shaped (C, H, W), but the samples are shaped {tuple(in_shape)} "
                            "(set data.shape, e.g. [1, 8, 8])")


def _sequence_input(arch: str, vocab_size: Optional[int], in_shape: Shape, in_dtype: Optional[str]) -> None:
    is_int = in_dtype is not None and np.issubdtype(np.dtype(in_dtype), np.integer)
    if vocab_size is None:
        if len(in_shape) == 1 or is_int:
            raise _fail("vocab_size", f"{arch} on token ids (samples shaped (T,), integer) needs vocab_size; "
                                      f"got samples shaped {tuple(in_shape)}")
        if len(in_shape) != 2:
            raise _fail("arch", f"{arch} takes sequences shaped (T, F) (float) or (T,) (token ids), but the "
                                f"samples are shaped {tuple(in_shape)}")
    else:
        if len(in_shape) != 1:
            raise _fail("vocab_size", f"with vocab_size set, {arch} takes token ids shaped (T,), but the samples "
                                      f"are shaped {tuple(in_shape)} (unset vocab_size for float sequences)")
        if in_dtype is not None and not is_int:
            raise _fail("vocab_size", f"with vocab_size set, {arch} takes integer token ids, got dtype {in_dtype}")


def _check_cnn(p: CNNParams, in_shape: Shape, in_dtype: Optional[str]) -> None:
    _int_list(p, "channels", allow_empty=False)
    _positive_int(p, "kernel_size")
    _positive_int(p, "pool")
    _boolean(p, "batch_norm")
    _probability(p, "dropout")
    _int_list(p, "hidden", allow_empty=True)
    _image_input("cnn", in_shape)
    _, h, w = cnn_feature_shape(p, in_shape)
    if h < 1 or w < 1:
        raise _fail("channels", f"{len(p.channels)} conv blocks pooling by {p.pool} shrink {in_shape[1]}x{in_shape[2]} "
                                "images to nothing; use fewer channels entries or a smaller pool")


def _check_resnet(p: ResNetParams, in_shape: Shape, in_dtype: Optional[str]) -> None:
    if isinstance(p.depth, bool) or not isinstance(p.depth, (int, np.integer)) or p.depth not in RESNET_DEPTHS:
        raise _fail("depth", f"must be one of {', '.join(map(str, RESNET_DEPTHS))}, got {p.depth!r}")
    _positive_int(p, "width")
    _image_input("resnet", in_shape)


def _check_rnn(arch: str) -> Callable[[RNNParams, Shape, Optional[str]], None]:
    def check(p: RNNParams, in_shape: Shape, in_dtype: Optional[str]) -> None:
        _positive_int(p, "hidden_size")
        _positive_int(p, "num_layers")
        _boolean(p, "bidirectional")
        _positive_int(p, "vocab_size", allow_none=True)
        _positive_int(p, "embed_dim")
        _probability(p, "dropout")
        _sequence_input(arch, p.vocab_size, in_shape, in_dtype)

    return check


def _check_transformer(p: TransformerParams, in_shape: Shape, in_dtype: Optional[str]) -> None:
    for name in ("d_model", "num_heads", "num_layers", "dim_feedforward", "max_len"):
        _positive_int(p, name)
    _positive_int(p, "vocab_size", allow_none=True)
    _probability(p, "dropout")
    if p.d_model % p.num_heads:
        raise _fail("d_model", f"must be divisible by num_heads ({p.num_heads}), got {p.d_model}")
    if p.activation not in ACTIVATIONS:
        raise _fail("activation", f"must be one of {', '.join(ACTIVATIONS)}, got {p.activation!r}")
    _sequence_input("transformer", p.vocab_size, in_shape, in_dtype)
    if in_shape[0] > p.max_len:
        raise _fail("max_len", f"sequences of length {in_shape[0]} exceed max_len {p.max_len}")


def validate(arch: str, params: Params, in_shape: Shape, in_dtype: Optional[str] = None) -> None:
    """Check ``params`` and the sample shape (and dtype, when given) for ``arch``.

    Args:
        arch: one of :data:`ARCHS`.
        params: the arch's parameter dataclass (see :func:`make_params`).
        in_shape: one sample's shape, e.g. ``(1, 8, 8)``, ``(6, 3)`` or ``(6,)``.
        in_dtype: the samples' dtype name, if known (integer dtypes mean token ids).

    Raises:
        SpecError: one line naming the field (``model.<field>``) and what was expected.
    """
    info = _info(arch)
    if not isinstance(params, info.params):
        raise _fail("arch", f"{arch} takes {info.params.__name__}, got {type(params).__name__}")
    in_shape = tuple(int(d) for d in in_shape)
    if not in_shape or min(in_shape) < 1:
        raise SpecError(f"a sample's dimensions must all be >= 1, got {in_shape}", path="data.shape")
    info.check(params, in_shape, in_dtype)


def make_params(arch: str, values: Optional[Mapping[str, Any]] = None) -> Params:
    """The parameter dataclass of ``arch`` from a mapping (the spec's ``model`` fields), defaults filled in.

    Raises:
        SpecError: ``model.arch`` is unknown, or a key is not a field of this arch.
    """
    cls = _info(arch).params
    values = dict(values or {})
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            raise _fail(key, f"is not a field of arch {arch} (its fields: {', '.join(known)})")
    return cls(**values)


def params_dict(params: Params) -> dict[str, Any]:
    """The parameters as a plain dict (for the resolved spec, logs and manifests)."""
    return asdict(params)


def _info(arch: str) -> "_Arch":
    if arch not in ARCHS:
        raise _fail("arch", f"must be one of {', '.join(ARCHS)}, got {arch!r}")
    return ARCHS[arch]


# -- initial weights (PyTorch's default inits, drawn from the seed's numpy stream) ----------------------


def _uniform(rng: np.random.Generator, bound: float, shape: Shape) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _linear(w: Weights, rng: np.random.Generator, name: str, fan_in: int, fan_out: int, bias: bool = True) -> None:
    """nn.Linear: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in)) for weight and bias; ``[out, in]``."""
    bound = 1.0 / np.sqrt(fan_in)
    w[f"{name}.weight"] = _uniform(rng, bound, (fan_out, fan_in))
    if bias:
        w[f"{name}.bias"] = _uniform(rng, bound, (fan_out,))


def _conv(w: Weights, rng: np.random.Generator, name: str, c_in: int, c_out: int, k: int, bias: bool) -> None:
    """nn.Conv2d: as nn.Linear with fan_in = c_in * k * k; weight OIHW ``[c_out, c_in, k, k]``."""
    bound = 1.0 / np.sqrt(c_in * k * k)
    w[f"{name}.weight"] = _uniform(rng, bound, (c_out, c_in, k, k))
    if bias:
        w[f"{name}.bias"] = _uniform(rng, bound, (c_out,))


def _batch_norm(w: Weights, name: str, c: int) -> None:
    """nn.BatchNorm2d: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0 (int64)."""
    w[f"{name}.weight"] = np.ones(c, np.float32)
    w[f"{name}.bias"] = np.zeros(c, np.float32)
    w[f"{name}.running_mean"] = np.zeros(c, np.float32)
    w[f"{name}.running_var"] = np.ones(c, np.float32)
    w[f"{name}.num_batches_tracked"] = np.array(0, np.int64)


def _layer_norm(w: Weights, name: str, d: int) -> None:
    w[f"{name}.weight"] = np.ones(d, np.float32)
    w[f"{name}.bias"] = np.zeros(d, np.float32)


def _embedding(w: Weights, rng: np.random.Generator, name: str, n: int, d: int, std: float = 1.0) -> None:
    """nn.Embedding: N(0, 1) by default; ``[num_embeddings, dim]``."""
    w[f"{name}.weight"] = (rng.standard_normal((n, d)) * std).astype(np.float32)


def _recurrent(w: Weights, rng: np.random.Generator, name: str, gates: int, in_size: int, p: RNNParams) -> None:
    """nn.LSTM / nn.GRU: every tensor U(+-1/sqrt(hidden)); ``weight_ih_l{k}[_reverse]`` is ``[gates*H, in]``."""
    h = p.hidden_size
    bound = 1.0 / np.sqrt(h)
    directions = ("", "_reverse") if p.bidirectional else ("",)
    for layer in range(p.num_layers):
        layer_in = in_size if layer == 0 else h * len(directions)
        for suffix in directions:
            tag = f"l{layer}{suffix}"
            w[f"{name}.weight_ih_{tag}"] = _uniform(rng, bound, (gates * h, layer_in))
            w[f"{name}.weight_hh_{tag}"] = _uniform(rng, bound, (gates * h, h))
            w[f"{name}.bias_ih_{tag}"] = _uniform(rng, bound, (gates * h,))
            w[f"{name}.bias_hh_{tag}"] = _uniform(rng, bound, (gates * h,))


def _attention(w: Weights, rng: np.random.Generator, name: str, d: int) -> None:
    """nn.MultiheadAttention: xavier_uniform packed in_proj ``[3d, d]``, zero biases, out_proj as Linear."""
    bound = np.sqrt(6.0 / (d + 3 * d))
    w[f"{name}.in_proj_weight"] = _uniform(rng, bound, (3 * d, d))
    w[f"{name}.in_proj_bias"] = np.zeros(3 * d, np.float32)
    _linear(w, rng, f"{name}.out_proj", d, d, bias=False)
    w[f"{name}.out_proj.bias"] = np.zeros(d, np.float32)


def _cnn_weights(p: CNNParams, rng: np.random.Generator, in_shape: Shape, out_features: int) -> Weights:
    w: Weights = {}
    c_in = in_shape[0]
    for i, c in enumerate(p.channels):
        _conv(w, rng, f"conv.{i}", c_in, c, p.kernel_size, bias=not p.batch_norm)
        if p.batch_norm:
            _batch_norm(w, f"bn.{i}", c)
        c_in = c
    widths = [int(np.prod(cnn_feature_shape(p, in_shape))), *p.hidden, out_features]
    for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        _linear(w, rng, f"fc.{j}", a, b)
    return w


def _resnet_weights(p: ResNetParams, rng: np.random.Generator, in_shape: Shape, out_features: int) -> Weights:
    w: Weights = {}
    _conv(w, rng, "stem.conv", in_shape[0], p.width, 3, bias=False)
    _batch_norm(w, "stem.bn", p.width)
    c_in = p.width
    for s, (c, stride) in enumerate(resnet_stages(p)):
        for b in range(resnet_blocks(p.depth)):
            name = f"stages.{s}.{b}"
            _conv(w, rng, f"{name}.conv1", c_in, c, 3, bias=False)
            _batch_norm(w, f"{name}.bn1", c)
            _conv(w, rng, f"{name}.conv2", c, c, 3, bias=False)
            _batch_norm(w, f"{name}.bn2", c)
            if resnet_projects(c_in, c, stride if b == 0 else 1):
                _conv(w, rng, f"{name}.proj_conv", c_in, c, 1, bias=False)
                _batch_norm(w, f"{name}.proj_bn", c)
            c_in = c
    _linear(w, rng, "fc", c_in, out_features)
    return w


def resnet_projects(c_in: int, c_out: int, stride: int) -> bool:
    """Whether a basic block's shortcut is a 1x1 conv + batch norm (option B) rather than the identity."""
    return stride != 1 or c_in != c_out


def _rnn_weights(gates: int) -> Callable[[RNNParams, np.random.Generator, Shape, int], Weights]:
    def draw(p: RNNParams, rng: np.random.Generator, in_shape: Shape, out_features: int) -> Weights:
        w: Weights = {}
        if p.vocab_size is not None:
            _embedding(w, rng, "embed", p.vocab_size, p.embed_dim)
        _recurrent(w, rng, "rnn", gates, rnn_input_size(p, in_shape), p)
        _linear(w, rng, "fc", p.hidden_size * (2 if p.bidirectional else 1), out_features)
        return w

    return draw


def _transformer_weights(p: TransformerParams, rng: np.random.Generator, in_shape: Shape,
                         out_features: int) -> Weights:
    w: Weights = {}
    d = p.d_model
    if p.vocab_size is not None:
        _embedding(w, rng, "embed", p.vocab_size, d)
    else:
        _linear(w, rng, "input_proj", in_shape[-1], d)
    # Learned positions; N(0, 0.02) (BERT's) rather than nn.Embedding's N(0, 1), so they do not swamp the inputs.
    _embedding(w, rng, "pos_embed", p.max_len, d, std=0.02)
    for i in range(p.num_layers):
        name = f"layers.{i}"
        _attention(w, rng, f"{name}.self_attn", d)
        _linear(w, rng, f"{name}.linear1", d, p.dim_feedforward)
        _linear(w, rng, f"{name}.linear2", p.dim_feedforward, d)
        _layer_norm(w, f"{name}.norm1", d)
        _layer_norm(w, f"{name}.norm2", d)
    _layer_norm(w, "norm", d)
    _linear(w, rng, "fc", d, out_features)
    return w


def initial_weights(arch: str, params: Params, seed: int, in_shape: Shape, out_features: int) -> Weights:
    """The arch's initial weights, drawn from ``np.random.default_rng([seed, 1])``.

    Args:
        arch: one of :data:`ARCHS`.
        params: the arch's parameter dataclass.
        seed: the spec's seed.
        in_shape: one sample's shape.
        out_features: width of the output logits.

    Returns:
        ``state_dict`` name -> array, in the names and layouts of the torch module of
        ``unified.adapters.torch_archs.build_torch`` (float32; ``num_batches_tracked`` int64).
    """
    validate(arch, params, in_shape)
    if isinstance(out_features, bool) or not isinstance(out_features, (int, np.integer)) or out_features < 1:
        raise SpecError(f"out_features must be a positive integer, got {out_features!r}")
    rng = np.random.default_rng([seed, _INIT_STREAM])
    return ARCHS[arch].weights(params, rng, tuple(int(d) for d in in_shape), int(out_features))


def build_arch_plan(arch: str, params: Union[Params, Mapping[str, Any], None], seed: int, in_shape: Shape,
                    out_features: int, in_dtype: Optional[str] = None) -> ArchPlan:
    """Validate and draw: the :class:`ArchPlan` of ``arch`` for samples of ``in_shape``.

    Args:
        arch: one of :data:`ARCHS`.
        params: the parameter dataclass, or a mapping of its fields (missing ones take the defaults).
        seed: the spec's seed (initial weights come from its numpy stream 1).
        in_shape: one sample's shape (``(C, H, W)``, ``(T, F)`` or ``(T,)``).
        out_features: width of the output logits.
        in_dtype: the samples' dtype, if known (checked against ``vocab_size``).

    Raises:
        SpecError: a bad field or an input shape the arch cannot take.
    """
    if params is None or isinstance(params, Mapping):
        params = make_params(arch, params)
    in_shape = tuple(int(d) for d in in_shape)
    validate(arch, params, in_shape, in_dtype)
    weights = initial_weights(arch, params, seed, in_shape, out_features)
    return ArchPlan(arch, params, in_shape, int(out_features), weights)


# -- the one list of built-in N-D architectures --------------------------------------------------------


@dataclass(frozen=True)
class _Arch:
    params: type
    input_kind: str  # "image" (C, H, W) | "sequence" (T, F) or (T,) token ids
    check: Callable[[Any, Shape, Optional[str]], None]
    weights: Callable[[Any, np.random.Generator, Shape, int], Weights]


RESNET_DEPTHS = (8, 14, 20)
RNN_GATES = {"lstm": 4, "gru": 3}  # rows of weight_ih per hidden unit

ARCHS: dict[str, _Arch] = {
    "cnn": _Arch(CNNParams, "image", _check_cnn, _cnn_weights),
    "resnet": _Arch(ResNetParams, "image", _check_resnet, _resnet_weights),
    "lstm": _Arch(RNNParams, "sequence", _check_rnn("lstm"), _rnn_weights(RNN_GATES["lstm"])),
    "gru": _Arch(RNNParams, "sequence", _check_rnn("gru"), _rnn_weights(RNN_GATES["gru"])),
    "transformer": _Arch(TransformerParams, "sequence", _check_transformer, _transformer_weights),
}


def input_kind(arch: str) -> str:
    """``"image"`` (samples ``(C, H, W)``) or ``"sequence"`` (``(T, F)`` or ``(T,)`` token ids)."""
    return _info(arch).input_kind
