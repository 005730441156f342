"""The built-in N-D architectures of ``unified.archs`` as Keras 3 models (TensorFlow, torch or JAX backend).

``build_keras(keras, plan)`` builds a functional ``keras.Model`` that takes the same canonical arrays as
the torch build (images ``N, C, H, W``, transposed to channels-last inside the model because TensorFlow's
CPU kernels do not all take NCHW; sequences ``N, T, F`` float or ``N, T`` int token ids) and loads the
plan's weights, which are in PyTorch's names and layouts. ``load_torch_weights`` and
``torch_named_weights`` move weights between the two naming schemes, so checkpoints and exports are
portable in both directions.

How the layers map (torch -> Keras):

- Conv2d weight OIHW -> Conv2D kernel HWIO; Linear weight ``[out, in]`` -> Dense kernel ``[in, out]``.
- BatchNorm2d -> ``TorchBatchNorm``, a ``BatchNormalization`` with momentum 0.9 (torch's 0.1), epsilon
  1e-5, whose training step updates the moving variance with the unbiased batch variance as torch does
  (Keras's own uses the biased one), and which counts ``num_batches_tracked``.
- A ReLU after a batch norm, conv or linear layer is that Keras layer's ``activation`` (one layer call
  instead of two: on the torch backend each Keras layer call costs ~70 us of Python, the same order as
  the small kernels of the digits CNN), and torch's ``flatten`` of ``C, H, W`` is one ``FlattenCHW`` call
  (transpose + reshape). The values are those of separate layers, bit for bit.
- nn.LSTM / nn.GRU -> ``TorchRNN``: ``keras.layers.RNN`` over cells that keep torch's gate order
  (LSTM i, f, g, o; GRU r, z, n with the reset gate applied after the hidden matmul, i.e. Keras's
  ``reset_after=True``) and torch's TWO bias vectors ``b_ih``, ``b_hh``. Keras's LSTM/GRU have one bias
  (LSTM) or a ``[2, 3H]`` bias in z, r, h order (GRU): loading torch weights into them is possible for
  inference, but in training torch's two biases each get the full gradient (their sum moves twice as far),
  so the per-step losses would part. Hence own cells.
- nn.MultiheadAttention -> ``TorchAttention``: the packed ``in_proj`` ``[3d, d]`` kept whole (kernel
  ``[d, 3d]``), heads split as torch splits them, softmax(q k^T / sqrt(head_dim)) v, ``out_proj``.
- LayerNorm -> LayerNormalization(epsilon=1e-5); Embedding -> Embedding (same ``[n, d]`` layout); learned
  positions -> ``PositionEmbedding``; GELU is the exact erf form on both sides.

Keras layer names are the torch module paths with ``.`` written as ``-`` (Keras on torch refuses dots in
names), e.g. ``conv-0``, ``stages-1-0-conv1``; the weight mapping is derived from those names and the layer
types alone, so it also works on a model reloaded from a ``.keras`` file.
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

import numpy as np

from unified.archs import (
    BN_MOMENTUM, NORM_EPS, RNN_GATES, ArchPlan, CNNParams, ResNetParams, RNNParams, TransformerParams,
    resnet_blocks, resnet_projects, resnet_stages,
)
from unified.errors import NotSupportedError, SpecError

_SEP = "-"  # stands for "." of torch module paths in Keras layer names


def _kname(torch_path: str) -> str:
    return torch_path.replace(".", _SEP)


def _tpath(keras_name: str) -> str:
    return keras_name.replace(_SEP, ".")


# -- weight transforms: keras value <-> torch value ------------------------------------------------------

_TO_TORCH: dict[Optional[str], Callable[[np.ndarray], np.ndarray]] = {
    None: lambda a: a,
    "dense": lambda a: a.T,  # [in, out] -> [out, in]
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
    "count": lambda a: a.astype(np.int64),  # num_batches_tracked: int32 in Keras (JAX has no int64 by default)
}
_TO_KERAS: dict[Optional[str], Callable[[np.ndarray], np.ndarray]] = {
    None: lambda a: a,
    "dense": lambda a: a.T,
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # OIHW -> HWIO
    "count": lambda a: a,
}


# -- custom layers (defined once per keras module: Keras must be imported on its backend first) ---------


@functools.lru_cache(maxsize=None)
def _layers(keras: Any) -> SimpleNamespace:
    ops = keras.ops
    register = keras.saving.register_keras_serializable(package="unified_archs")

    @register
    class TorchBatchNorm(keras.layers.BatchNormalization):
        """BatchNormalization with torch's training update (unbiased running variance) and batch count.

        ``activation`` (e.g. ``"relu"``) is applied to the output, so BatchNorm2d -> ReLU is one Keras layer
        call (each call of a layer costs ~70 us of Python on the torch backend); the values are those of a
        separate activation layer.
        """

        def __init__(self, activation: Any = None, **kwargs: Any) -> None:
            kwargs.setdefault("momentum", 1.0 - BN_MOMENTUM)
            kwargs.setdefault("epsilon", NORM_EPS)
            super().__init__(**kwargs)
            self.activation = None if activation is None else keras.activations.get(activation)

        def build(self, input_shape: Any) -> None:
            super().build(input_shape)
            self.num_batches_tracked = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                                       trainable=False, name="num_batches_tracked")
            self._norm_axis = self.axis % len(input_shape)

        def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
            if training and self.trainable:
                out = self._train_forward(inputs)
            else:
                out = super().call(inputs, training=False, mask=mask)
            return out if self.activation is None else self.activation(out)

        def _train_forward(self, inputs: Any) -> Any:
            """torch's BatchNorm2d in training: normalize with the batch's biased variance, average the
            unbiased one into the running variance (momentum in torch's convention, see ``__init__``)."""
            x = ops.cast(inputs, "float32")
            axes = self._reduction_axes
            mean = ops.mean(x, axis=axes)
            # biased, what torch normalizes with. ops.var, not mean((x - mean)^2): on torch it is a Welford pass
            # accumulating in float64 (~170 us on a 32x8x8x16 batch against ~15 us), but the float32 two-pass
            # form moves the per-step losses by ulps, enough to part resnet's from torch's by step ~60
            var = ops.var(x, axis=axes)
            dims = [x.shape[i] for i in axes]  # samples per channel: a Python number when the shape is known
            if None in dims:  # (a TensorFlow graph traced for any batch size) else a tensor
                count = ops.cast(ops.size(x), "float32") / float(x.shape[self._norm_axis])
            else:
                count = float(math.prod(dims))
            m = self.momentum
            batch_mean, batch_var = ops.stop_gradient(mean), ops.stop_gradient(var)  # no gradient path needed
            unbiased = batch_var * count / (count - 1.0)  # what torch's running_var averages
            moving_mean, moving_var = ops.cast(self.moving_mean, "float32"), ops.cast(self.moving_variance, "float32")
            self.moving_mean.assign(moving_mean * m + batch_mean * (1.0 - m))
            self.moving_variance.assign(moving_var * m + unbiased * (1.0 - m))
            self.num_batches_tracked.assign_add(1)
            out = ops.batch_normalization(x, mean, var, axis=self._norm_axis, offset=self.beta, scale=self.gamma,
                                          epsilon=self.epsilon)
            return ops.cast(out, self.compute_dtype)

        def get_config(self) -> dict[str, Any]:
            act = None if self.activation is None else keras.activations.serialize(self.activation)
            return {**super().get_config(), "activation": act}

        def torch_variables(self) -> list[tuple[str, Any, Optional[str]]]:
            return [("weight", self.gamma, None), ("bias", self.beta, None),
                    ("running_mean", self.moving_mean, None), ("running_var", self.moving_variance, None),
                    ("num_batches_tracked", self.num_batches_tracked, "count")]

    @register
    class TorchRNNCell(keras.layers.Layer):
        """One direction of one layer of torch's LSTM / GRU: torch's gate order, two bias vectors."""

        def __init__(self, mode: str, units: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.mode, self.units = mode, units
            self.gates = RNN_GATES[mode]
            self.state_size = [units, units] if mode == "lstm" else units
            self.output_size = units

        def build(self, input_shape: Any) -> None:
            g = self.gates * self.units
            self.kernel = self.add_weight(shape=(input_shape[-1], g), initializer="zeros", name="kernel")
            self.recurrent_kernel = self.add_weight(shape=(self.units, g), initializer="zeros",
                                                    name="recurrent_kernel")
            self.bias_ih = self.add_weight(shape=(g,), initializer="zeros", name="bias_ih")
            self.bias_hh = self.add_weight(shape=(g,), initializer="zeros", name="bias_hh")

        def call(self, inputs: Any, states: Any, training: Any = None) -> Any:
            states = states if isinstance(states, (list, tuple)) else [states]
            gi = ops.matmul(inputs, self.kernel) + self.bias_ih
            gh = ops.matmul(states[0], self.recurrent_kernel) + self.bias_hh
            if self.mode == "lstm":
                i, f, g, o = ops.split(gi + gh, 4, axis=-1)
                c = ops.sigmoid(f) * states[1] + ops.sigmoid(i) * ops.tanh(g)
                h = ops.sigmoid(o) * ops.tanh(c)
                return h, [h, c]
            ir, iz, in_ = ops.split(gi, 3, axis=-1)
            hr, hz, hn = ops.split(gh, 3, axis=-1)
            r, z = ops.sigmoid(ir + hr), ops.sigmoid(iz + hz)
            n = ops.tanh(in_ + r * hn)  # reset applied after the hidden matmul (torch; Keras reset_after=True)
            h = (1.0 - z) * n + z * states[0]
            return h, [h]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "mode": self.mode, "units": self.units}

    @register
    class TorchRNN(keras.layers.Layer):
        """torch's nn.LSTM / nn.GRU (batch_first) reduced to its last hidden state (``h_n`` of the top layer).

        Returns ``[N, H]`` (``[N, 2H]`` bidirectional: forward's last step, backward's first step).
        """

        def __init__(self, mode: str, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                     dropout: float = 0.0, unroll: bool = False, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.mode, self.hidden_size, self.num_layers = mode, hidden_size, num_layers
            self.bidirectional, self.dropout, self.unroll = bidirectional, dropout, unroll
            self.tags = [f"l{k}{s}" for k in range(num_layers) for s in self._suffixes()]
            self.rnns = [keras.layers.RNN(TorchRNNCell(mode, hidden_size, name=f"cell_{t}"), return_sequences=True,
                                          unroll=unroll, name=f"rnn_{t}") for t in self.tags]
            self.drop = keras.layers.Dropout(dropout) if dropout > 0 and num_layers > 1 else None

        def _suffixes(self) -> tuple[str, ...]:
            return ("", "_reverse") if self.bidirectional else ("",)

        def build(self, input_shape: Any) -> None:
            # Build every cell here (not lazily in call), so a model reloaded from .keras finds their variables.
            per_layer = len(self._suffixes())
            for i, rnn in enumerate(self.rnns):
                width = input_shape[-1] if i < per_layer else self.hidden_size * per_layer
                rnn.build((input_shape[0], input_shape[1], width))

        def call(self, x: Any, training: Any = None) -> Any:
            per_layer = len(self._suffixes())
            for k in range(self.num_layers):
                if k > 0 and self.drop is not None:  # torch: dropout on each layer's output but the last
                    x = self.drop(x, training=training)
                fwd = self.rnns[k * per_layer](x, training=training)
                if not self.bidirectional:
                    x = fwd
                    continue
                bwd = self.rnns[k * per_layer + 1](ops.flip(x, axis=1), training=training)
                x = ops.concatenate([fwd, ops.flip(bwd, axis=1)], axis=-1)
            h = x[:, -1, : self.hidden_size]
            if self.bidirectional:
                h = ops.concatenate([h, x[:, 0, self.hidden_size:]], axis=-1)
            return h

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (input_shape[0], self.hidden_size * len(self._suffixes()))

        def torch_variables(self) -> list[tuple[str, Any, Optional[str]]]:
            out = []
            for tag, rnn in zip(self.tags, self.rnns):
                c = rnn.cell
                out += [(f"weight_ih_{tag}", c.kernel, "dense"), (f"weight_hh_{tag}", c.recurrent_kernel, "dense"),
                        (f"bias_ih_{tag}", c.bias_ih, None), (f"bias_hh_{tag}", c.bias_hh, None)]
            return out

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "mode": self.mode, "hidden_size": self.hidden_size,
                    "num_layers": self.num_layers, "bidirectional": self.bidirectional, "dropout": self.dropout,
                    "unroll": self.unroll}

    @register
    class TorchAttention(keras.layers.Layer):
        """torch's nn.MultiheadAttention (self-attention, batch_first, no mask) with its packed in_proj."""

        def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
            self.drop = keras.layers.Dropout(dropout) if dropout > 0 else None

        def build(self, input_shape: Any) -> None:
            d = self.d_model
            self.in_proj_kernel = self.add_weight(shape=(d, 3 * d), initializer="zeros", name="in_proj_kernel")
            self.in_proj_bias = self.add_weight(shape=(3 * d,), initializer="zeros", name="in_proj_bias")
            self.out_kernel = self.add_weight(shape=(d, d), initializer="zeros", name="out_kernel")
            self.out_bias = self.add_weight(shape=(d,), initializer="zeros", name="out_bias")

        def _heads(self, t: Any, steps: Any) -> Any:  # [N, T, d] -> [N, heads, T, head_dim]
            t = ops.reshape(t, (-1, steps, self.num_heads, self.d_model // self.num_heads))
            return ops.transpose(t, (0, 2, 1, 3))

        def call(self, x: Any, training: Any = None) -> Any:
            steps = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
            q, k, v = ops.split(ops.matmul(x, self.in_proj_kernel) + self.in_proj_bias, 3, axis=-1)
            q, k, v = self._heads(q, steps), self._heads(k, steps), self._heads(v, steps)
            scale = 1.0 / float(np.sqrt(self.d_model // self.num_heads))
            attn = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * scale, axis=-1)
            if self.drop is not None:
                attn = self.drop(attn, training=training)
            out = ops.reshape(ops.transpose(ops.matmul(attn, v), (0, 2, 1, 3)), (-1, steps, self.d_model))
            return ops.matmul(out, self.out_kernel) + self.out_bias

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def torch_variables(self) -> list[tuple[str, Any, Optional[str]]]:
            return [("in_proj_weight", self.in_proj_kernel, "dense"), ("in_proj_bias", self.in_proj_bias, None),
                    ("out_proj.weight", self.out_kernel, "dense"), ("out_proj.bias", self.out_bias, None)]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "d_model": self.d_model, "num_heads": self.num_heads,
                    "dropout": self.dropout}

    @register
    class FlattenCHW(keras.layers.Layer):
        """Flattens channels-last ``N, H, W, C`` in torch's ``C, H, W`` order (what ``nn.Flatten`` sees on NCHW):
        one layer call for Permute + Flatten."""

        def build(self, input_shape: Any) -> None:
            self.n_chw = int(np.prod(input_shape[1:]))

        def call(self, x: Any) -> Any:
            return ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, self.n_chw))

        def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
            return (input_shape[0], int(np.prod(input_shape[1:])))

    @register
    class PositionEmbedding(keras.layers.Layer):
        """Adds learned positions ``weight[:T]`` (``[max_len, d]``, torch's ``nn.Embedding`` layout)."""

        def __init__(self, max_len: int, d_model: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.max_len, self.d_model = max_len, d_model

        def build(self, input_shape: Any) -> None:
            self.embeddings = self.add_weight(shape=(self.max_len, self.d_model), initializer="zeros",
                                              name="embeddings")

        def call(self, x: Any) -> Any:
            steps = x.shape[1] if x.shape[1] is not None else ops.shape(x)[1]
            return x + ops.convert_to_tensor(self.embeddings)[:steps]

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def torch_variables(self) -> list[tuple[str, Any, Optional[str]]]:
            return [("weight", self.embeddings, None)]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "max_len": self.max_len, "d_model": self.d_model}

    return SimpleNamespace(TorchBatchNorm=TorchBatchNorm, TorchRNNCell=TorchRNNCell, TorchRNN=TorchRNN,
                           TorchAttention=TorchAttention, FlattenCHW=FlattenCHW, PositionEmbedding=PositionEmbedding)


def custom_objects(keras: Any) -> dict[str, type]:
    """The custom layers by name, for ``keras.saving.load_model(path, custom_objects=...)`` in a new process."""
    return dict(vars(_layers(keras)))


# -- the builds --------------------------------------------------------------------------------------------

_CL = "channels_last"
_ZEROS = {"kernel_initializer": "zeros"}  # placeholders: the plan's weights are loaded right after (and random
# initializers cost a compile per shape on JAX)


def _conv(keras: Any, x: Any, name: str, filters: int, k: int, stride: int, bias: bool,
          activation: Optional[str] = None) -> Any:
    """Conv2D as torch's Conv2d(padding=k // 2): explicit symmetric zero padding where strided.

    Keras's ``same`` pads asymmetrically (extra at the bottom/right) when striding an even size, torch
    pads both sides alike, so a strided conv gets ZeroPadding2D + ``valid``. ``activation`` is applied by
    the Conv2D layer itself (the values of a separate activation layer, one layer call less).
    """
    if stride == 1:
        return keras.layers.Conv2D(filters, k, padding="same", use_bias=bias, data_format=_CL, name=_kname(name),
                                   activation=activation, **_ZEROS)(x)
    if k // 2:
        x = keras.layers.ZeroPadding2D(k // 2, data_format=_CL, name=_kname(name) + "_pad")(x)
    return keras.layers.Conv2D(filters, k, strides=stride, padding="valid", use_bias=bias, data_format=_CL,
                               name=_kname(name), activation=activation, **_ZEROS)(x)


def _relu(keras: Any, x: Any) -> Any:
    return keras.layers.ReLU()(x)


def _image_input(keras: Any, plan: ArchPlan) -> tuple[Any, Any]:
    inp = keras.Input(shape=plan.in_shape, dtype="float32", name="inputs")
    return inp, keras.layers.Permute((2, 3, 1), name="to_nhwc")(inp)  # N,C,H,W -> N,H,W,C


def _cnn(keras: Any, lay: SimpleNamespace, plan: ArchPlan, **_: Any) -> Any:
    p: CNNParams = plan.params
    inp, x = _image_input(keras, plan)
    for i, c in enumerate(p.channels):
        # conv -> [batch norm] -> relu as two layer calls (conv + relu, or conv + batch norm + relu)
        if p.batch_norm:
            x = _conv(keras, x, f"conv.{i}", c, p.kernel_size, 1, bias=False)
            x = lay.TorchBatchNorm(activation="relu", name=_kname(f"bn.{i}"))(x)
        else:
            x = _conv(keras, x, f"conv.{i}", c, p.kernel_size, 1, bias=True, activation="relu")
        if p.pool > 1:
            x = keras.layers.MaxPooling2D(p.pool, data_format=_CL)(x)
    x = lay.FlattenCHW(name="flatten_chw")(x)  # flatten in torch's C, H, W order
    n_fc = len(p.hidden) + 1
    for j, width in enumerate([*p.hidden, plan.out_features]):
        if p.dropout > 0:
            x = keras.layers.Dropout(p.dropout)(x)
        x = keras.layers.Dense(width, activation="relu" if j < n_fc - 1 else None, name=_kname(f"fc.{j}"),
                               **_ZEROS)(x)
    return keras.Model(inp, x, name="cnn")


def _resnet(keras: Any, lay: SimpleNamespace, plan: ArchPlan, **_: Any) -> Any:
    p: ResNetParams = plan.params
    inp, x = _image_input(keras, plan)
    x = lay.TorchBatchNorm(activation="relu", name="stem-bn")(_conv(keras, x, "stem.conv", p.width, 3, 1, bias=False))
    c_in = p.width
    for s, (c, first_stride) in enumerate(resnet_stages(p)):
        for b in range(resnet_blocks(p.depth)):
            name, stride = f"stages.{s}.{b}", first_stride if b == 0 else 1
            y = _conv(keras, x, f"{name}.conv1", c, 3, stride, bias=False)
            y = lay.TorchBatchNorm(activation="relu", name=_kname(f"{name}.bn1"))(y)
            y = _conv(keras, y, f"{name}.conv2", c, 3, 1, bias=False)
            y = lay.TorchBatchNorm(name=_kname(f"{name}.bn2"))(y)
            if resnet_projects(c_in, c, stride):
                x = _conv(keras, x, f"{name}.proj_conv", c, 1, stride, bias=False)
                x = lay.TorchBatchNorm(name=_kname(f"{name}.proj_bn"))(x)
            x = _relu(keras, keras.layers.Add()([y, x]))
            c_in = c
    x = keras.layers.GlobalAveragePooling2D(data_format=_CL)(x)
    return keras.Model(inp, keras.layers.Dense(plan.out_features, name="fc", **_ZEROS)(x), name="resnet")


def _sequence_input(keras: Any, plan: ArchPlan) -> Any:
    return keras.Input(shape=plan.in_shape, dtype="int32" if plan.token_ids else "float32", name="inputs")


def _rnn(keras: Any, lay: SimpleNamespace, plan: ArchPlan, *, unroll: bool = False, **_: Any) -> Any:
    p: RNNParams = plan.params
    inp = x = _sequence_input(keras, plan)
    if p.vocab_size is not None:
        x = keras.layers.Embedding(p.vocab_size, p.embed_dim, name="embed", embeddings_initializer="zeros")(x)
    x = lay.TorchRNN(plan.arch, p.hidden_size, p.num_layers, p.bidirectional, p.dropout, unroll, name="rnn")(x)
    return keras.Model(inp, keras.layers.Dense(plan.out_features, name="fc", **_ZEROS)(x), name=plan.arch)


def _transformer(keras: Any, lay: SimpleNamespace, plan: ArchPlan, **_: Any) -> Any:
    p: TransformerParams = plan.params
    inp = x = _sequence_input(keras, plan)
    if p.vocab_size is not None:
        x = keras.layers.Embedding(p.vocab_size, p.d_model, name="embed", embeddings_initializer="zeros")(x)
    else:
        x = keras.layers.Dense(p.d_model, name="input_proj", **_ZEROS)(x)
    x = lay.PositionEmbedding(p.max_len, p.d_model, name="pos_embed")(x)

    def drop(t: Any) -> Any:
        return keras.layers.Dropout(p.dropout)(t) if p.dropout > 0 else t

    for i in range(p.num_layers):  # torch's TransformerEncoderLayer(norm_first=True)
        n = f"layers.{i}"
        h = keras.layers.LayerNormalization(epsilon=NORM_EPS, name=_kname(f"{n}.norm1"))(x)
        h = lay.TorchAttention(p.d_model, p.num_heads, p.dropout, name=_kname(f"{n}.self_attn"))(h)
        x = keras.layers.Add()([x, drop(h)])
        h = keras.layers.LayerNormalization(epsilon=NORM_EPS, name=_kname(f"{n}.norm2"))(x)
        # keras.activations.gelu is the exact erf form by default
        h = keras.layers.Dense(p.dim_feedforward, activation=p.activation, name=_kname(f"{n}.linear1"), **_ZEROS)(h)
        h = keras.layers.Dense(p.d_model, name=_kname(f"{n}.linear2"), **_ZEROS)(drop(h))
        x = keras.layers.Add()([x, drop(h)])
    x = keras.layers.LayerNormalization(epsilon=NORM_EPS, name="norm")(x)
    x = keras.layers.GlobalAveragePooling1D(data_format=_CL)(x)
    return keras.Model(inp, keras.layers.Dense(plan.out_features, name="fc", **_ZEROS)(x), name="transformer")


_BUILDERS: dict[str, Callable[..., Any]] = {  # (keras, layers, plan, **options) -> keras.Model
    "cnn": _cnn, "resnet": _resnet, "lstm": _rnn, "gru": _rnn, "transformer": _transformer,
}


def build_keras(keras: Any, plan: ArchPlan, *, unroll: bool = False) -> Any:
    """The ``keras.Model`` of ``plan`` with ``plan.weights`` (PyTorch names and layouts) loaded.

    Args:
        keras: the ``keras`` module, imported on its backend.
        plan: an :class:`unified.archs.ArchPlan`.
        unroll: lstm / gru only: unroll the time loop (no while loop in the graph). TFLite's built-in ops
            cannot convert the loop over a dynamic batch, so rebuild with ``unroll=True`` for that export
            (and ``load_torch_weights`` the trained weights); the other archs ignore it. The TFLite export
            (``export_keras._tflite_net``) sets the same option through the layers' configs, so it also
            reaches a model reloaded from ``.keras`` and the user's own Keras RNN layers.

    Returns:
        A functional model taking the canonical input (``N,C,H,W`` float32, ``N,T,F`` float32 or ``N,T``
        integer token ids) and returning ``[N, out_features]`` logits; the same weights give the torch
        build's outputs (``training=True`` too, batch-norm statistics included).
    """
    if plan.arch not in _BUILDERS:
        raise NotSupportedError(f"model.arch: {plan.arch!r} has no Keras build")
    model = _BUILDERS[plan.arch](keras, _layers(keras), plan, unroll=unroll)
    load_torch_weights(model, plan.weights)
    return model


# -- weights in PyTorch's names and layouts ------------------------------------------------------------


def _torch_variables(model: Any) -> Iterator[tuple[str, Any, Optional[str]]]:
    """(torch ``state_dict`` name, Keras variable, transform) for every weight of a model built here."""
    import keras

    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _tpath(layer.name)
        if hasattr(layer, "torch_variables"):
            entries = layer.torch_variables()
        elif isinstance(layer, keras.layers.Conv2D):
            entries = [("weight", layer.kernel, "conv")] + ([("bias", layer.bias, None)] if layer.use_bias else [])
        elif isinstance(layer, keras.layers.Dense):
            entries = [("weight", layer.kernel, "dense"), ("bias", layer.bias, None)]
        elif isinstance(layer, keras.layers.LayerNormalization):
            entries = [("weight", layer.gamma, None), ("bias", layer.beta, None)]
        elif isinstance(layer, keras.layers.Embedding):
            entries = [("weight", layer.embeddings, None)]
        else:
            raise NotSupportedError(f"layer {layer.name!r} ({type(layer).__name__}) has no PyTorch name mapping")
        for suffix, var, how in entries:
            yield f"{prefix}.{suffix}", var, how


def torch_named_weights(model: Any) -> dict[str, np.ndarray]:
    """The model's weights as PyTorch's ``state_dict`` of the torch build (names, layouts, dtypes).

    Args:
        model: a model from :func:`build_keras` (or reloaded from its ``.keras`` file).

    Returns:
        name -> numpy array (copies), loadable into ``build_torch``'s module with ``strict=True``.
    """
    import keras

    return {name: np.array(_TO_TORCH[how](keras.ops.convert_to_numpy(var)))
            for name, var, how in _torch_variables(model)}


def load_torch_weights(model: Any, weights: dict[str, np.ndarray]) -> None:
    """Assign PyTorch-named weights (a torch ``state_dict`` as numpy) to a model from :func:`build_keras`.

    Raises:
        SpecError: a name is missing or unexpected, or a shape does not fit (like torch's ``strict=True``).
    """
    entries = list(_torch_variables(model))
    expected = {name for name, _, _ in entries}
    missing = sorted(expected - set(weights))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise SpecError(f"weights do not fit the {model.name} model: missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]} ({len(missing)} missing, {len(unexpected)} unexpected)")
    for name, var, how in entries:
        value = _TO_KERAS[how](np.asarray(weights[name]))
        if tuple(value.shape) != tuple(var.shape):
            raise SpecError(f"weight {name!r} has shape {tuple(np.asarray(weights[name]).shape)}, which does not "
                            f"fit the {model.name} model")
        var.assign(value.astype(var.dtype))
