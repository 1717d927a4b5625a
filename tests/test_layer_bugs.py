"""Every supported layer: break its conversion on purpose and see the first divergence land on it.

Layer-granularity fixtures only (tiny, tiny_v1, layers/*), where each layer has its own reference,
so attribution must be exact. One generic break (an offset added to one layer's output) for every
layer, and the classic semantic bugs of the layer families from ../shared/research/pitfalls.md.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from support import plant

from parity.caffe.fixtures import list_fixtures, load_fixture
from parity.caffe.graph import Net
from parity.check.compare import NoiseRule
from parity.check.pipeline import check_reference, prepare
from parity.convert import Blob, registry
from parity.convert.normalization import BatchNormHandler
from parity.errors import ShapeDivergence
from parity.targets import from_fixture

TOL = NoiseRule()  # parity's default rule
LAYERWISE = [f for f in list_fixtures() if load_fixture(f).granularity == "layer" and load_fixture(f).kind == "caffe"]
CASES = [(f, layer.name) for f in LAYERWISE for layer in Net.from_prototxt(load_fixture(f).prototxt).layers
         if layer.type != "Input" and layer.tops]  # Silence has no output to break


def first_divergence(model: str) -> str | None:
    target = from_fixture(model)
    return check_reference(prepare(target), target.references[0], TOL).first_divergence


def test_every_supported_type_is_in_a_layer_granularity_fixture():
    covered = {layer.type for f in LAYERWISE for layer in Net.from_prototxt(load_fixture(f).prototxt).layers}
    assert set(registry.supported_types()) <= covered


@pytest.mark.parametrize("model, layer", CASES, ids=[f"{m}-{lay}" for m, lay in CASES])
def test_breaking_one_layer_is_caught_at_that_layer(model, layer):
    net = Net.from_prototxt(load_fixture(model).prototxt)

    def offset_outputs(original):
        return lambda lay, bottoms, ctx: [Blob(keras.layers.Rescaling(1.0, offset=0.5)(b.tensor), b.caffe_shape)
                                          for b in original(lay, bottoms, ctx)]

    with plant(net.layer(layer).type, offset_outputs, layer=layer):
        assert first_divergence(model) == layer


def test_batchnorm_scale_factor_ignored_is_caught(monkeypatch):
    def build_ignoring_factor(self, layer, bottoms, blobs, ctx):
        mean, variance, _ = blobs
        return original(self, layer, bottoms, [mean, variance, np.ones(1, np.float32)], ctx)

    original = BatchNormHandler.build
    monkeypatch.setattr(BatchNormHandler, "build", build_ignoring_factor)
    assert first_divergence("layers/batchnorm_scale") == "bn"


def test_eltwise_coefficients_ignored_are_caught(monkeypatch):
    from parity.keras_layers import merge

    original_call = merge.CaffeEltwise.call
    monkeypatch.setattr(merge.CaffeEltwise, "call", lambda self, inputs: keras.ops.add(inputs[0], inputs[1])
                        if self.coeffs else original_call(self, inputs))
    assert first_divergence("layers/eltwise") == "sum"


def test_concat_axis_kept_in_caffe_numbering_is_caught(monkeypatch):
    from parity.convert import merge

    monkeypatch.setattr(merge, "keras_axis", lambda axis, rank: axis)  # Caffe's axis used on channels-last data
    with pytest.raises(ShapeDivergence) as info:  # Keras cannot even join (11,17,4) and (11,17,6) on H
        first_divergence("layers/concat")
    assert info.value.layer == "channels"


def test_lrn_within_channel_treated_as_across_is_caught(monkeypatch):
    from parity.keras_layers import normalization

    original_init = normalization.CaffeLRN.__init__
    monkeypatch.setattr(normalization.CaffeLRN, "__init__",
                        lambda self, size=5, alpha=1.0, beta=0.75, k=1.0, region="across",
                        **kw: original_init(self, size, alpha, beta, k, "across", **kw))
    assert first_divergence("layers/lrn") == "within"


def test_deconvolution_kernel_flipped_is_caught(monkeypatch):
    from parity.convert.convolution import DeconvolutionHandler

    original = DeconvolutionHandler.build
    monkeypatch.setattr(DeconvolutionHandler, "build", lambda self, layer, bottoms, blobs, ctx: original(
        self, layer, bottoms, [blobs[0][:, :, ::-1, ::-1].copy()] + blobs[1:], ctx))
    assert first_divergence("layers/conv_variants") == "up"


def test_deconvolution_group_blocks_swapped_are_caught(monkeypatch):
    """Each group's weight rows [i*C_in/g, (i+1)*C_in/g) given to the next group: shapes still fit."""
    from parity.convert.convolution import DeconvolutionHandler

    def build_with_blocks_rolled(self, layer, bottoms, blobs, ctx):
        rows = blobs[0].shape[0] // self.param(layer).group
        return original(self, layer, bottoms, [np.roll(blobs[0], rows, axis=0)] + blobs[1:], ctx)

    original = DeconvolutionHandler.build
    monkeypatch.setattr(DeconvolutionHandler, "build", build_with_blocks_rolled)
    assert first_divergence("layers/deconv_group") == "up_g2"


def test_flatten_applied_to_channels_last_data_is_caught(monkeypatch):
    from parity.convert import reshaping

    monkeypatch.setattr(reshaping, "in_caffe_order", lambda layer, tensor, rank, ctx, suffix="nchw": tensor)
    monkeypatch.setattr(reshaping, "in_parity_order", lambda layer, tensor, rank, ctx, suffix="nhwc": tensor)
    assert first_divergence("layers/reshaping") == "flat"


def first_report(model: str):
    target = from_fixture(model)
    return check_reference(prepare(target), target.references[0], TOL)


def test_pooling_drop_rule_applied_per_axis_is_caught(monkeypatch):
    """Caffe drops a last window starting in the padding on both axes once either axis is padded."""
    import parity.caffe.shapes as shapes
    import parity.keras_layers.pooling as pooling

    def per_axis(hw, kernel, stride, pad, ceil_mode=True):
        return tuple(shapes.pooled_size(n, k, s, p, ceil_mode, bool(p)) for n, k, s, p in zip(hw, kernel, stride, pad))

    monkeypatch.setattr(pooling, "pooled_hw", per_axis)
    monkeypatch.setattr(shapes, "pooled_hw", per_axis)
    report = first_report("layers/edge_cases")
    assert report.first_divergence == "pool_padw"
    (hint,) = report.hints["pool_padw"]
    assert hint.cause == "rounding" and "on both axes if either axis is padded" in hint.message


def test_deconvolution_kernel_shorter_than_stride_is_caught(monkeypatch):
    """Keras' 'valid' transposed convolution gives s*i there; Caffe s(i-1) + k, one row and column fewer."""
    from parity.convert import convolution

    monkeypatch.setattr(convolution, "uncovered_tail", lambda kernel, stride, dilation: [0, 0])
    report = first_report("layers/edge_cases")
    assert report.first_divergence == "deconv_gap"
    (hint,) = report.hints["deconv_gap"]
    assert hint.cause == "rounding" and "transposed convolution's output size" in hint.message


def test_lstm_gates_read_as_i_f_g_o_are_caught(monkeypatch):
    """Caffe's LSTM gate blocks are i, f, o, g; Keras' order (i, f, g, o) swaps the output gate and g."""
    from parity.convert.recurrent import LSTMHandler

    def swap_o_g(blob):
        i, f, o, g = np.split(blob, 4, axis=0)
        return np.concatenate([i, f, g, o], axis=0)

    def build_with_o_g_swapped(self, layer, bottoms, blobs, ctx):
        return original(self, layer, bottoms, [swap_o_g(b) for b in blobs], ctx)

    original = LSTMHandler.build
    monkeypatch.setattr(LSTMHandler, "build", build_with_o_g_swapped)
    assert first_divergence("layers/recurrent") == "lstm"


def test_recurrent_cont_ignored_is_caught(monkeypatch):
    """cont_t = 0 starts a new sequence (h_{t-1} and the forget gate scaled by 0): running each stream as
    one sequence is caught at the first recurrent layer (the fixture's cont has zeros mid-sequence)."""
    from parity.convert.recurrent import RecurrentHandler

    def build_with_cont_all_ones(self, layer, bottoms, blobs, ctx):
        cont = bottoms[1]
        ones = Blob(keras.layers.Rescaling(0.0, offset=1.0)(cont.tensor), cont.caffe_shape)
        return original(self, layer, [bottoms[0], ones, *bottoms[2:]], blobs, ctx)

    original = RecurrentHandler.build
    monkeypatch.setattr(RecurrentHandler, "build", build_with_cont_all_ones)
    assert first_divergence("layers/recurrent") == "lstm"


def test_rnn_top_taken_as_the_hidden_state_is_caught(monkeypatch):
    """Caffe's RNN top is o_t = tanh(W_ho h_t + b_o), not the hidden state h_t."""
    from keras import ops

    from parity.keras_layers.recurrent import CaffeRecurrent

    def step_returning_hidden(self, total, keep, state):
        if self.cell != "rnn":
            return original(self, total, keep, state)
        hidden = ops.tanh(total)
        return [hidden], hidden

    original = CaffeRecurrent._step
    monkeypatch.setattr(CaffeRecurrent, "_step", step_returning_hidden)
    assert first_divergence("layers/recurrent") == "rnn"


def test_embed_index_off_by_one_is_caught(monkeypatch):
    """Index k picks weight row k; a 1-based lookup (row k + 1) is caught."""
    from parity.convert.indexing import EmbedHandler

    def build_one_row_off(self, layer, bottoms, blobs, ctx):
        return original(self, layer, bottoms, [np.roll(blobs[0], -1, axis=0)] + blobs[1:], ctx)

    original = EmbedHandler.build
    monkeypatch.setattr(EmbedHandler, "build", build_one_row_off)
    assert first_divergence("layers/bvlc_misc") == "embed"


def test_spp_levels_flattened_channels_last_are_caught(monkeypatch):
    """Each pyramid level is flattened in Caffe's C,H,W order; flattening parity's H,W,C data is caught."""
    from parity.convert import windows

    monkeypatch.setattr(windows, "in_caffe_order", lambda layer, tensor, rank, ctx, suffix="nchw": tensor)
    assert first_divergence("layers/bvlc_misc") == "spp"


def test_im2col_columns_in_tensorflow_order_are_caught(monkeypatch):
    """Caffe's column (c * kh + i) * kw + j is channel-major; extract_patches' order (kernel position
    major, channel minor) is caught."""
    from keras import ops

    from parity.keras_layers import windows

    monkeypatch.setattr(windows, "caffe_columns", lambda taps: ops.concatenate(taps, axis=-1))
    assert first_divergence("layers/bvlc_misc") == "im2col"


def test_parameter_reshaped_instead_of_transposed_is_caught(monkeypatch):
    """A 4-D Parameter blob moves to channels-last by a transpose; reshaping it to that shape is caught."""
    from parity.convert import indexing
    from parity.data.layout import keras_shape

    monkeypatch.setattr(indexing, "to_keras_layout", lambda array: array.reshape(keras_shape(array.shape)))
    assert first_divergence("layers/bvlc_misc") == "param4"


def test_batch_reindex_rounding_its_indices_is_caught(monkeypatch):
    """Caffe truncates a float index (2.8 selects item 2); rounding it instead is caught."""
    from parity.convert.indexing import BatchReindexHandler

    def build_rounding(self, layer, bottoms, blobs, ctx):
        index = bottoms[1]
        rounded = Blob(keras.layers.Rescaling(1.0, offset=0.5)(index.tensor), index.caffe_shape)
        return original(self, layer, [bottoms[0], rounded], blobs, ctx)

    original = BatchReindexHandler.build
    monkeypatch.setattr(BatchReindexHandler, "build", build_rounding)
    assert first_divergence("layers/bvlc_misc") == "reindex"


# -- the fork's (brocolli-caffe's) layers ------------------------------------------------------------
def test_relu6_threshold_taken_as_six_is_caught(monkeypatch):
    """ReLU6 caps at relu6_param.threshold (6 only by default): a cap fixed at 6 is caught where it is 1.5."""
    from parity.convert.elementwise import ReLU6Handler

    def build_capped_at_six(self, layer, bottoms, blobs, ctx):
        relu = keras.layers.ReLU(max_value=6.0, negative_slope=float(self.param(layer).negative_slope))
        return [relu(bottoms[0].tensor)]

    monkeypatch.setattr(ReLU6Handler, "build", build_capped_at_six)
    assert first_divergence("layers/fork_activations") == "relu6_leaky"


def test_hardswish_with_keras2_hard_sigmoid_is_caught(monkeypatch):
    """HardSwish is x * clip(x/6 + 1/2, 0, 1); Keras 2's hard_sigmoid slope (0.2 x + 0.5) inside is caught."""
    from keras import ops

    from parity.keras_layers.elementwise import CaffeUnary

    original = CaffeUnary.call
    monkeypatch.setattr(CaffeUnary, "call", lambda self, x: x * ops.clip(0.2 * x + 0.5, 0.0, 1.0)
                        if self.op == "hardswish" else original(self, x))
    assert first_divergence("layers/fork_activations") == "hardswish"


def test_hardsigmoid_with_pytorch_slope_is_caught(monkeypatch):
    """The fork's HardSigmoid defaults to alpha 0.2, beta 0.5; PyTorch's x/6 + 1/2 is caught."""
    from parity.convert.elementwise import HardSigmoidHandler
    from parity.keras_layers import CaffeUnary

    monkeypatch.setattr(HardSigmoidHandler, "build", lambda self, layer, bottoms, blobs, ctx: [
        CaffeUnary("hardsigmoid", scale=1 / 6, shift=0.5)(bottoms[0].tensor)])
    assert first_divergence("layers/fork_activations") == "hardsigmoid"


def test_upsample_as_bilinear_is_caught(monkeypatch):
    """The fork's Upsample repeats each cell (nearest); a bilinear upsampling is caught."""
    from parity.convert.resampling import UpsampleHandler

    original = UpsampleHandler.build
    monkeypatch.setattr(UpsampleHandler, "build", lambda self, layer, bottoms, blobs, ctx: [
        keras.layers.UpSampling2D(2, interpolation="bilinear")(bottoms[0].tensor)] if bottoms[0].rank == 4
        else original(self, layer, bottoms, blobs, ctx))
    assert first_divergence("layers/fork_resize") == "up"


def test_resize_edge_clamped_is_caught(monkeypatch):
    """Resize leaves a neighbour past the last row/column out of the sum; clamping it (TensorFlow's
    legacy resize_bilinear) is caught where the map is enlarged."""
    from parity.keras_layers import resampling

    def clamped(src, dst):
        first, _, w_first, _ = original(src, dst)
        return first, np.minimum(first + 1, src - 1), w_first, np.float32(1) - w_first

    original = resampling._resize_table
    monkeypatch.setattr(resampling, "_resize_table", clamped)
    assert first_divergence("layers/fork_resize") == "resize_up"


def test_bilinear_interpolate_align_corners_ignored_is_caught(monkeypatch):
    """align_corners defaults to true in the fork's BilinearInterpolate; half-pixel sampling is caught."""
    from parity.convert.resampling import BilinearInterpolateHandler

    monkeypatch.setattr(BilinearInterpolateHandler, "mode_of", lambda self, layer: "half_pixel")
    assert first_divergence("layers/fork_resize") == "interp_align"


def test_pixelshuffle_in_depth_to_space_order_is_caught(monkeypatch):
    """PixelShuffle takes channel p * r^2 + i * r + j; TensorFlow's depth_to_space order
    ((i * r + j) * C + p) is caught."""
    from parity.convert.resampling import PixelShuffleHandler

    def build_depth_to_space(self, layer, bottoms, blobs, ctx):
        r, (_, c, h, w) = self.param(layer).upscale_factor, bottoms[0].caffe_shape
        out = c // (r * r)
        x = bottoms[0].tensor[..., : out * r * r]
        x = keras.layers.Reshape((h, w, r, r, out))(x)
        x = keras.layers.Permute((1, 3, 2, 4, 5))(x)
        return [keras.layers.Reshape((h * r, w * r, out))(x)]

    monkeypatch.setattr(PixelShuffleHandler, "build", build_depth_to_space)
    assert first_divergence("layers/fork_resize") == "shuffle"


def test_pad_sides_swapped_are_caught(monkeypatch):
    """pad_u/pad_l are the top and left pads; giving them to the bottom and right (same shape) is caught."""
    from parity.convert.resampling import PadHandler

    original = PadHandler.amounts
    monkeypatch.setattr(PadHandler, "amounts",
                        lambda self, layer: tuple(original(self, layer)[i] for i in (1, 0, 3, 2)))
    assert first_divergence("layers/fork_resize") == "pad_const"


def test_unsqueeze_on_channels_last_data_is_caught(monkeypatch):
    """Unsqueeze inserts its axis in Caffe's order; inserting it in the Keras tensor's own order is caught."""
    from parity.convert.reshaping import UnsqueezeHandler

    def build_in_keras_order(self, layer, bottoms, blobs, ctx):
        (x,) = bottoms
        shape, at = list(x.tensor.shape[1:]), self.param(layer).dim % (x.rank + 1) - 1  # among non-batch axes
        return [keras.layers.Reshape(tuple(shape[:at] + [1] + shape[at:]))(x.tensor)]

    monkeypatch.setattr(UnsqueezeHandler, "build", build_in_keras_order)
    assert first_divergence("layers/fork_resize") == "unsq"


def test_pooling_mask_as_tensorflow_argmax_is_caught(monkeypatch):
    """MAX pooling's mask is h * W + w within the plane; tf.nn.max_pool_with_argmax's index, which also
    counts channels ((h * W + w) * C + c), is caught at the mask top."""
    from keras import ops

    from parity.keras_layers.pooling import CaffeMaxPoolMask

    def call_counting_channels(self, x):
        channels = int(x.shape[-1])
        return original(self, x) * channels + ops.arange(channels, dtype=x.dtype)

    original = CaffeMaxPoolMask.call
    monkeypatch.setattr(CaffeMaxPoolMask, "call", call_counting_channels)
    assert first_divergence("layers/fork_unpool") == "pool"


def test_maxunpool_summing_repeated_positions_is_caught(monkeypatch):
    """Overlapping pooling windows can name one cell twice; Caffe's loop keeps the later value, while a
    scatter that adds (tf.scatter_nd) sums them. Caught at the unpool after the overlapping pool."""
    from keras import ops

    from parity.keras_layers.pooling import CaffeMaxUnpool

    def call_summing(self, inputs):
        x, mask = inputs
        h, w, c = (int(d) for d in x.shape[1:])
        plane = self.size[0] * self.size[1]
        values = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1,))
        where = ops.reshape(ops.cast(ops.transpose(mask, (0, 3, 1, 2)), "int32"), (-1, h * w))
        planes = ops.shape(where)[0]
        target = ops.reshape(ops.arange(planes, dtype="int32")[:, None] * plane + where, (-1,))
        summed = ops.segment_sum(values, target, num_segments=planes * plane)
        return ops.transpose(ops.reshape(summed, (-1, c, *self.size)), (0, 2, 3, 1))

    monkeypatch.setattr(CaffeMaxUnpool, "call", call_summing)
    assert first_divergence("layers/fork_unpool") == "unpool"


def test_batchnormkyle_alpha_and_beta_swapped_are_caught(monkeypatch):
    """BatchNormKyle's blobs 3 and 4 are alpha (the scale) then beta (the shift); reading them the other
    way round is caught at the first layer that has them."""
    from parity.convert.normalization import BatchNormKyleHandler

    original = BatchNormKyleHandler.build
    monkeypatch.setattr(BatchNormKyleHandler, "build", lambda self, layer, bottoms, blobs, ctx: original(
        self, layer, bottoms, blobs[:3] + blobs[3:][::-1], ctx))
    assert first_divergence("layers/fork_bn") == "kyle_ab"


def test_proposal_overlap_without_the_plus_one_is_caught(monkeypatch):
    """The fork's NMS counts box sides pixel-inclusive (x2 - x1 + 1); the overlap without it is smaller, so
    NMS keeps boxes Caffe suppresses. At `proposal` (threshold 0.7) no decision changes; at
    `proposal_scored` (0.5, smaller anchors) the rois differ beyond noise."""
    import tensorflow as tf

    from parity.keras_layers import proposal

    def overlaps_without_plus_one(box, boxes):
        iw = tf.maximum(0.0, tf.minimum(box[2], boxes[:, 2]) - tf.maximum(box[0], boxes[:, 0]))
        ih = tf.maximum(0.0, tf.minimum(box[3], boxes[:, 3]) - tf.maximum(box[1], boxes[:, 1]))
        inter = tf.cast(iw * ih, boxes.dtype)
        area = (box[2] - box[0]) * (box[3] - box[1])
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return inter / (area + areas - inter)

    monkeypatch.setattr(proposal, "plus_one_overlaps", overlaps_without_plus_one)
    assert first_divergence("layers/proposal") == "proposal_scored"
