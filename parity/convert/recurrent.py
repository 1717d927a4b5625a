"""LSTM and RNN: Caffe's unrolled recurrent nets as one parity>CaffeRecurrent layer each.

The facts of Caffe's RecurrentLayer that a conversion depends on (recurrent_layer.cpp, lstm_layer.cpp,
lstm_unit_layer.cpp, rnn_layer.cpp; the computation itself is described in keras_layers/recurrent.py):
- bottoms: x (T, N, ...) and cont (T, N), then x_static (N, ...) when there is one more bottom than
  needed, then with `expose_hidden` the initial state, h_0 (and c_0 for LSTM), each (1, N, num_output);
- tops: the output over time (T, N, num_output), then with `expose_hidden` h_T (and c_T);
- learned blobs, in the order the unrolled net first owns them: LSTM W_xc (4H, D), b_c (4H),
  [W_xc_static (4H, D_static)], W_hc (4H, H); RNN W_xh (H, D), b_h (H), [W_xh_static (H, D_static)],
  W_hh (H, H), W_ho (H, H), b_o (H). D is the product of x's axes from 2 on (an InnerProduct with
  axis 2), D_static that of x_static's axes from 1 on.
"""
from __future__ import annotations

import math

from .handler import LayerError, LayerHandler, Param, Shapes
from .preset import call_with_weights
from .registry import register
from .reshaping import in_caffe_order


class RecurrentHandler(LayerHandler):
    param_field = "recurrent_param"
    # debug_info only logs; the fillers only initialise weights for training.
    supported = frozenset({"num_output", "weight_filler", "bias_filler", "debug_info", "expose_hidden"})
    cell = ""
    state_blobs = 0  # h (and c): the recurrent state exposed with expose_hidden

    def layout(self, layer, bottoms) -> tuple[int, int, int, bool]:
        """(T, N, num_output, has a static input), checked as Caffe checks the bottoms."""
        p = self.param(layer)
        if p.num_output <= 0:
            raise LayerError("recurrent_param.num_output must be positive")
        state = self.state_blobs if p.expose_hidden else 0
        if not 2 + state <= len(bottoms) <= 3 + state:
            names = "x, cont, [x_static]" + (", h_0, c_0" if state == 2 else ", h_0" if state else "")
            raise LayerError(f"expects bottoms {names}: {2 + state} or {3 + state}, got {len(bottoms)}")
        x, cont = tuple(bottoms[0]), tuple(bottoms[1])
        if len(x) < 3:
            raise LayerError(f"x must be (T, N, ...) with at least 3 axes (Caffe's input transform is an "
                             f"InnerProduct on axis 2), got {x}")
        t, n, h = x[0], x[1], int(p.num_output)
        if cont != (t, n):
            raise LayerError(f"cont must be (T, N) = {(t, n)}, got {cont}")
        static = len(bottoms) == 3 + state
        if static and (len(bottoms[2]) < 2 or bottoms[2][0] != n):
            raise LayerError(f"x_static must be (N, ...) with N = {n} and at least 2 axes, got {tuple(bottoms[2])}")
        for shape in bottoms[2 + static:]:
            if tuple(shape) != (1, n, h):
                raise LayerError(f"an initial state must be (1, N, num_output) = {(1, n, h)}, got {tuple(shape)}")
        return t, n, h, static

    def params(self, h: int, x_dim: int, static_dim: int | None) -> list[Param]:
        """The learned blobs in Caffe's order, for num_output `h` and flattened input sizes."""
        raise NotImplementedError

    def shapes(self, layer, bottoms):
        t, n, h, static = self.layout(layer, bottoms)
        static_dim = math.prod(bottoms[2][1:]) if static else None
        params = self.params(h, math.prod(bottoms[0][2:]), static_dim)
        tops = [(t, n, h)] + [(1, n, h)] * (self.state_blobs if self.param(layer).expose_hidden else 0)
        return Shapes(tops, params)

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeRecurrent

        p = self.param(layer)
        shapes = [b.caffe_shape for b in bottoms]
        t, n, h, static = self.layout(layer, shapes)
        inputs = [in_caffe_order(layer, b.tensor, b.rank, ctx, f"nchw{i}") for i, b in enumerate(bottoms)]
        recurrent = CaffeRecurrent(self.cell, h, t, n, math.prod(shapes[0][2:]),
                                   math.prod(shapes[2][1:]) if static else 0, p.expose_hidden, name=ctx.name(layer))
        outputs = call_with_weights(recurrent, inputs, blobs)
        return list(outputs) if p.expose_hidden else [outputs]


@register("LSTM")
class LSTMHandler(RecurrentHandler):
    cell, state_blobs = "lstm", 2

    def params(self, h, x_dim, static_dim):
        params = [Param((4 * h, x_dim), "weight"), Param((4 * h,), "bias")]
        if static_dim is not None:
            params.append(Param((4 * h, static_dim), "weight"))
        return params + [Param((4 * h, h), "weight")]


@register("RNN")
class RNNHandler(RecurrentHandler):
    cell, state_blobs = "rnn", 1

    def params(self, h, x_dim, static_dim):
        params = [Param((h, x_dim), "weight"), Param((h,), "bias")]
        if static_dim is not None:
            params.append(Param((h, static_dim), "weight"))
        return params + [Param((h, h), "weight"), Param((h, h), "weight"), Param((h,), "bias")]
