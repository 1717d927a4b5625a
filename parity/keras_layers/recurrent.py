"""Caffe's LSTM and RNN layers: the net Caffe unrolls over T time steps, computed step by step.

Caffe (recurrent_layer.cpp with lstm_layer.cpp / rnn_layer.cpp) builds an inner net over a bottom of
T time steps by N independent streams and runs it once per forward. What the unrolled net computes,
and what this layer reproduces in the same order of operations:

- x (T, N, ...) is flattened from axis 2 and transformed for all steps at once: W_x x + b;
- an optional static input (N, ...) is flattened from axis 1 and transformed once, without bias;
- step t first scales the previous hidden state by cont_t (the sequence-continuation indicator, one
  value per stream): h' = cont_t * h_{t-1}, then sums W_h h' + (W_x x_t + b) [+ W_s x_static];
- LSTM: that sum holds the gates in the order i, f, o, g (blocks of num_output); i, f, o go through a
  sigmoid and g through tanh; the forget gate is multiplied by cont_t as well, so a 0 starts a new
  sequence for the cell too: c_t = cont_t * f * c_{t-1} + i * g, h_t = o * tanh(c_t). No clipping.
- RNN: h_t = tanh(sum), and the output is o_t = tanh(W_o h_t + b_o), not h_t.

The top is the per-step output stacked over time (T, N, num_output); with `expose_hidden` the initial
state comes from extra bottoms (h_0, then c_0 for LSTM) and the last state is extra tops (h_T, c_T).
Without it the initial state is zeros: what Caffe uses on its first forward (it carries the last state
into the next forward, which a stateless Keras model does not).
"""
from __future__ import annotations

import keras
from keras import ops

CELLS = ("lstm", "rnn")


@keras.saving.register_keras_serializable(package="parity")
class CaffeRecurrent(keras.layers.Layer):
    """Caffe's LSTM or RNN over a static (T, N, D) sequence, with Caffe's blobs as its weights.

    Inputs, in Caffe's bottom order: x (T, N, D) and cont (T, N), then x_static (N, D_static) if
    `static_dim`, then h_0 (1, N, H) and for LSTM c_0 (1, N, H) if `expose_hidden`. x and x_static
    arrive already flattened to those shapes in Caffe's element order.
    """

    def __init__(self, cell: str = "lstm", num_output: int = 1, steps: int = 1, streams: int = 1,
                 input_dim: int = 1, static_dim: int = 0, expose_hidden: bool = False, **kwargs):
        super().__init__(**kwargs)
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        self.cell, self.num_output = cell, int(num_output)
        self.steps, self.streams = int(steps), int(streams)
        self.input_dim, self.static_dim = int(input_dim), int(static_dim)
        self.expose_hidden = bool(expose_hidden)

    @property
    def gates(self) -> int:
        """Rows of the transforms: four gate blocks for LSTM, the hidden state for RNN."""
        return 4 * self.num_output if self.cell == "lstm" else self.num_output

    def build(self, input_shape):
        """The variables in Caffe's blob order, in Caffe's shapes (InnerProduct's (out, in))."""
        h, g = self.num_output, self.gates
        self.w_x = self.add_weight(name="w_x", shape=(g, self.input_dim), initializer="zeros")
        self.b_x = self.add_weight(name="b_x", shape=(g,), initializer="zeros")
        self.w_static = (self.add_weight(name="w_static", shape=(g, self.static_dim), initializer="zeros")
                         if self.static_dim else None)
        self.w_h = self.add_weight(name="w_h", shape=(g, h), initializer="zeros")
        if self.cell == "rnn":
            self.w_o = self.add_weight(name="w_o", shape=(h, h), initializer="zeros")
            self.b_o = self.add_weight(name="b_o", shape=(h,), initializer="zeros")

    def call(self, inputs):
        x, cont, *rest = inputs
        static = rest.pop(0) if self.static_dim else None
        t, n, h = self.steps, self.streams, self.num_output
        x_part = ops.matmul(ops.reshape(x, (t, n, self.input_dim)), ops.transpose(self.w_x)) + self.b_x
        static_part = (None if static is None else
                       ops.matmul(ops.reshape(static, (n, self.static_dim)), ops.transpose(self.w_static)))
        state = [ops.reshape(s, (n, h)) for s in rest] if self.expose_hidden else \
            [ops.zeros((n, h), dtype=self.compute_dtype)] * (2 if self.cell == "lstm" else 1)
        outputs = []
        for step in range(t):
            keep = ops.reshape(cont[step], (n, 1))
            total = ops.matmul(keep * state[0], ops.transpose(self.w_h)) + x_part[step]  # Caffe's Eltwise order
            if static_part is not None:
                total = total + static_part
            state, output = self._step(total, keep, state)
            outputs.append(output)
        top = ops.stack(outputs, axis=0)
        if not self.expose_hidden:
            return top
        return [top] + [ops.reshape(s, (1, n, h)) for s in state]

    def _step(self, total, keep, state):
        """(new state, this step's output) from the summed transforms of one step."""
        h = self.num_output
        if self.cell == "rnn":
            hidden = ops.tanh(total)
            return [hidden], ops.tanh(ops.matmul(hidden, ops.transpose(self.w_o)) + self.b_o)
        i, f, o, g = (total[:, k * h:(k + 1) * h] for k in range(4))  # Caffe's gate order: i, f, o, g
        cell = keep * ops.sigmoid(f) * state[1] + ops.sigmoid(i) * ops.tanh(g)
        hidden = ops.sigmoid(o) * ops.tanh(cell)
        return [hidden, cell], hidden

    def compute_output_shape(self, input_shape):
        top = (self.steps, self.streams, self.num_output)
        if not self.expose_hidden:
            return top
        last = (1, self.streams, self.num_output)
        return [top] + [last] * (2 if self.cell == "lstm" else 1)

    def get_config(self):
        config = super().get_config()
        config.update(cell=self.cell, num_output=self.num_output, steps=self.steps, streams=self.streams,
                      input_dim=self.input_dim, static_dim=self.static_dim, expose_hidden=self.expose_hidden)
        return config
