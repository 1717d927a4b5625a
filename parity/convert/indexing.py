"""Embed, BatchReindex and Parameter; and why Filter has no conversion.

Embed (embed_layer.cpp): every element of the bottom, in Caffe's order, is an index into the weight
(input_dim, num_output), turned into an int by a C cast (truncation toward zero); the top is the
bottom's shape with num_output appended, plus the bias (num_output) when bias_term (the default). A
release build of Caffe does not check the range (its checks are debug-only): an index outside
[0, input_dim) reads memory outside the weight. The conversion cannot reproduce that; TensorFlow's
gather refuses such an index on the CPU (and gives zeros on a GPU).

BatchReindex (batch_reindex_layer.cpp): top[i] = bottom[0][int(bottom[1][i])] along the first axis;
bottom[1] must be 1-D, and Caffe aborts on an index outside [0, N).

Parameter (parameter_layer.hpp): no bottoms, one top, which is the layer's learned blob of
parameter_param.shape, as it is.
"""
from __future__ import annotations

from ..data.layout import to_keras_layout
from .handler import LayerError, LayerHandler, Param, Shapes, one_bottom
from .preset import call_with_weights
from .registry import not_convertible, register
from .reshaping import in_caffe_order, in_parity_order


@register("Embed")
class EmbedHandler(LayerHandler):
    param_field = "embed_param"
    supported = frozenset({"num_output", "input_dim", "bias_term", "weight_filler", "bias_filler"})

    def shapes(self, layer, bottoms):
        p = self.param(layer)
        bottom = one_bottom(bottoms)
        if p.num_output <= 0 or p.input_dim <= 0:
            raise LayerError("embed_param.num_output and input_dim must be positive")
        params = [Param((int(p.input_dim), int(p.num_output)), "weight")]
        if p.bias_term:
            params.append(Param((int(p.num_output),), "bias"))
        return Shapes([bottom + (int(p.num_output),)], params)

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeEmbed

        p, (x,) = self.param(layer), bottoms
        embed = CaffeEmbed(p.input_dim, p.num_output, p.bias_term, name=ctx.name(layer))
        y = call_with_weights(embed, in_caffe_order(layer, x.tensor, x.rank, ctx), blobs)
        return [in_parity_order(layer, y, x.rank + 1, ctx)]


@register("BatchReindex")
class BatchReindexHandler(LayerHandler):
    def shapes(self, layer, bottoms):
        if len(bottoms) != 2:
            raise LayerError(f"expects two bottoms (the blob and the indices), got {len(bottoms)}")
        if len(bottoms[1]) != 1:
            raise LayerError(f"the indices (bottom 1) must be 1-D, got shape {tuple(bottoms[1])}")
        return Shapes([(bottoms[1][0],) + tuple(bottoms[0][1:])])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeBatchReindex

        return [CaffeBatchReindex(name=ctx.name(layer))([b.tensor for b in bottoms])]


@register("Parameter")
class ParameterHandler(LayerHandler):
    param_field = "parameter_param"
    supported = frozenset({"shape"})

    def shapes(self, layer, bottoms):
        if bottoms:
            raise LayerError(f"takes no bottoms, got {len(bottoms)}")
        shape = tuple(int(d) for d in self.param(layer).shape.dim)
        if not shape or min(shape) < 1:
            raise LayerError(f"parameter_param.shape {shape} must have at least one axis, each of size 1 or more")
        return Shapes([shape], [Param(shape, "weight")])

    def build(self, layer, bottoms, blobs, ctx):
        from ..keras_layers import CaffeParameter

        value = to_keras_layout(blobs[0])
        parameter = CaffeParameter(value.shape, name=ctx.name(layer))
        return [call_with_weights(parameter, ctx.anchor(layer), [value])]


not_convertible("Filter", "its top keeps the batch items whose selector is nonzero, so the top's first axis "
                "is known only once the selector's values are (Caffe reshapes it on every forward); parity's "
                "Keras graphs have static shapes computed from the prototxt alone")
