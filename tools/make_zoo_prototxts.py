"""Write the architecture-zoo deploy prototxts (fixtures/<net>/deploy.prototxt) from their published
layer tables. The prototxts are committed; this script records how they were made.

    python tools/make_zoo_prototxts.py
"""
from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class Net:
    def __init__(self, name: str, shape: tuple[int, ...], comment: str):
        self.lines = [f"# {line}" for line in comment.splitlines()] + [f'name: "{name}"']
        self.add("data", "Input", [], ["data"], "input_param { shape { %s } }" % " ".join(f"dim: {d}" for d in shape))

    def add(self, name, kind, bottoms, tops, params=""):
        parts = ([f'name: "{name}"', f'type: "{kind}"'] + [f'bottom: "{b}"' for b in bottoms]
                 + [f'top: "{t}"' for t in tops])
        self.lines.append("layer { " + " ".join(parts) + (f" {params}" if params else "") + " }")
        return tops[0] if tops else None

    def conv(self, name, bottom, out, k, s=1, p=0, group=1, bias=True, dilation=1):
        extra = ((f" group: {group}" if group > 1 else "") + ("" if bias else " bias_term: false")
                 + (f" dilation: {dilation}" if dilation > 1 else ""))
        return self.add(name, "Convolution", [bottom], [name],
                        f"convolution_param {{ num_output: {out} kernel_size: {k} stride: {s} pad: {p}{extra} }}")

    def relu(self, name, blob):
        return self.add(name, "ReLU", [blob], [blob])

    def pool(self, name, bottom, kind, k=0, s=1, p=0, global_=False):
        body = "global_pooling: true" if global_ else f"kernel_size: {k} stride: {s}" + (f" pad: {p}" if p else "")
        return self.add(name, "Pooling", [bottom], [name], f"pooling_param {{ pool: {kind} {body} }}")

    def write(self, folder: str) -> None:
        (FIXTURES / folder).mkdir(parents=True, exist_ok=True)
        (FIXTURES / folder / "deploy.prototxt").write_text("\n".join(self.lines) + "\n")


def caffenet() -> None:
    n = Net("CaffeNet", (1, 3, 227, 227),
            "CaffeNet (BVLC's single-GPU AlexNet): grouped convolutions, LRN, ceil pooling.")
    x = n.relu("relu1", n.conv("conv1", "data", 96, 11, s=4))
    x = n.add("norm1", "LRN", [n.pool("pool1", x, "MAX", 3, 2)], ["norm1"],
              "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")
    x = n.relu("relu2", n.conv("conv2", x, 256, 5, p=2, group=2))
    x = n.add("norm2", "LRN", [n.pool("pool2", x, "MAX", 3, 2)], ["norm2"],
              "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }")
    x = n.relu("relu3", n.conv("conv3", x, 384, 3, p=1))
    x = n.relu("relu4", n.conv("conv4", x, 384, 3, p=1, group=2))
    x = n.pool("pool5", n.relu("relu5", n.conv("conv5", x, 256, 3, p=1, group=2)), "MAX", 3, 2)
    for k, width in ((6, 4096), (7, 4096)):
        x = n.add(f"fc{k}", "InnerProduct", [x], [f"fc{k}"], f"inner_product_param {{ num_output: {width} }}")
        n.relu(f"relu{k}", x)
        n.add(f"drop{k}", "Dropout", [x], [x], "dropout_param { dropout_ratio: 0.5 }")
    x = n.add("fc8", "InnerProduct", [x], ["fc8"], "inner_product_param { num_output: 1000 }")
    n.add("prob", "Softmax", [x], ["prob"])
    n.write("caffenet")


def squeezenet() -> None:
    n = Net("SqueezeNet_v1.1", (1, 3, 127, 127),
            "SqueezeNet 1.1 (Iandola et al.): fire modules (squeeze, expand 1x1 and 3x3,\n"
            "Concat), ceil pooling, global average pooling. Input reduced to 127x127 for the budget.")
    x = n.pool("pool1", n.relu("relu_conv1", n.conv("conv1", "data", 64, 3, s=2)), "MAX", 3, 2)

    def fire(i, x, squeeze, expand):
        s = n.relu(f"fire{i}/relu_squeeze1x1", n.conv(f"fire{i}/squeeze1x1", x, squeeze, 1))
        a = n.relu(f"fire{i}/relu_expand1x1", n.conv(f"fire{i}/expand1x1", s, expand, 1))
        b = n.relu(f"fire{i}/relu_expand3x3", n.conv(f"fire{i}/expand3x3", s, expand, 3, p=1))
        return n.add(f"fire{i}/concat", "Concat", [a, b], [f"fire{i}/concat"])

    x = fire(3, fire(2, x, 16, 64), 16, 64)
    x = n.pool("pool3", x, "MAX", 3, 2)
    x = fire(5, fire(4, x, 32, 128), 32, 128)
    x = n.pool("pool5", x, "MAX", 3, 2)
    for i, (sq, ex) in zip(range(6, 10), ((48, 192), (48, 192), (64, 256), (64, 256))):
        x = fire(i, x, sq, ex)
    n.add("drop9", "Dropout", [x], [x], "dropout_param { dropout_ratio: 0.5 }")
    x = n.relu("relu_conv10", n.conv("conv10", x, 1000, 1))
    x = n.pool("pool10", x, "AVE", global_=True)
    n.add("prob", "Softmax", [x], ["prob"])
    n.write("squeezenet")


def mobilenet() -> None:
    n = Net("MobileNet_v1", (1, 3, 128, 128),
            "MobileNet v1 (Howard et al.), shicai's Caffe layout: depthwise convolutions as\n"
            "group == channels, BatchNorm + Scale, input scale 0.017. Input reduced to 128x128 for the budget.")

    def block(name, x, out, k, s, group=1):
        p = (k - 1) // 2
        x = n.conv(name, x, out, k, s=s, p=p, group=group, bias=False)
        n.add(f"{name}/bn", "BatchNorm", [x], [x], "batch_norm_param { eps: 1e-5 }")
        n.add(f"{name}/scale", "Scale", [x], [x], "scale_param { bias_term: true }")
        return n.relu(f"relu{name[4:]}", x)

    x = block("conv1", "data", 32, 3, 2)
    channels = 32
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (out, stride) in enumerate(plan, 2):
        x = block(f"conv{i}_1/dw", x, channels, 3, stride, group=channels)
        x = block(f"conv{i}_2/sep", x, out, 1, 1)
        channels = out
    x = n.pool("pool6", x, "AVE", global_=True)
    x = n.conv("fc7", x, 1000, 1)
    n.add("prob", "Softmax", [x], ["prob"])
    n.write("mobilenet")


def resnet50() -> None:
    n = Net("ResNet-50", (1, 3, 64, 64),
            "ResNet-50 (He et al.), the layout of KaimingHe's Caffe release: convolutions without bias,\n"
            "BatchNorm + Scale in place, Eltwise SUM, ceil pool1. Input reduced to 64x64 for the budget, so pool5\n"
            "is global (the original's 7x7 window needs a 224 input).")

    def conv_bn(name, bottom, out, k, s=1, p=0, relu=True):
        x = n.conv(name, bottom, out, k, s=s, p=p, bias=False)
        suffix = name[3:]
        n.add(f"bn{suffix}", "BatchNorm", [x], [x], "batch_norm_param { use_global_stats: true }")
        n.add(f"scale{suffix}", "Scale", [x], [x], "scale_param { bias_term: true }")
        return n.relu(f"{name}_relu", x) if relu else x

    x = conv_bn("conv1", "data", 64, 7, s=2, p=3)
    x = n.pool("pool1", x, "MAX", 3, 2)
    for stage, (blocks, width) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), 2):
        for b in range(blocks):
            name = f"res{stage}{'abcdef'[b]}"
            stride = 2 if b == 0 and stage > 2 else 1
            shortcut = conv_bn(f"{name}_branch1", x, width * 4, 1, s=stride, relu=False) if b == 0 else x
            y = conv_bn(f"{name}_branch2a", x, width, 1, s=stride)
            y = conv_bn(f"{name}_branch2b", y, width, 3, p=1)
            y = conv_bn(f"{name}_branch2c", y, width * 4, 1, relu=False)
            x = n.add(name, "Eltwise", [shortcut, y], [name])
            n.relu(f"{name}_relu", x)
    x = n.pool("pool5", x, "AVE", global_=True)
    x = n.add("fc1000", "InnerProduct", [x], ["fc1000"], "inner_product_param { num_output: 1000 }")
    n.add("prob", "Softmax", [x], ["prob"])
    n.write("resnet50")


def googlenet() -> None:
    n = Net("GoogleNet", (1, 3, 64, 64),
            "GoogLeNet (Szegedy et al.), BVLC's Caffe layout: inception modules joined by Concat, LRN,\n"
            "ceil pooling, '/' in layer names. Input reduced to 64x64 for the budget, so pool5 is global.")
    lrn = "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }"
    x = n.relu("conv1/relu_7x7", n.conv("conv1/7x7_s2", "data", 64, 7, s=2, p=3))
    x = n.add("pool1/norm1", "LRN", [n.pool("pool1/3x3_s2", x, "MAX", 3, 2)], ["pool1/norm1"], lrn)
    x = n.relu("conv2/relu_3x3_reduce", n.conv("conv2/3x3_reduce", x, 64, 1))
    x = n.relu("conv2/relu_3x3", n.conv("conv2/3x3", x, 192, 3, p=1))
    x = n.pool("pool2/3x3_s2", n.add("conv2/norm2", "LRN", [x], ["conv2/norm2"], lrn), "MAX", 3, 2)

    def inception(name, x, c1, r3, c3, r5, c5, pp):
        a = n.relu(f"{name}/relu_1x1", n.conv(f"{name}/1x1", x, c1, 1))
        b = n.relu(f"{name}/relu_3x3_reduce", n.conv(f"{name}/3x3_reduce", x, r3, 1))
        b = n.relu(f"{name}/relu_3x3", n.conv(f"{name}/3x3", b, c3, 3, p=1))
        c = n.relu(f"{name}/relu_5x5_reduce", n.conv(f"{name}/5x5_reduce", x, r5, 1))
        c = n.relu(f"{name}/relu_5x5", n.conv(f"{name}/5x5", c, c5, 5, p=2))
        d = n.pool(f"{name}/pool", x, "MAX", 3, 1, p=1)
        d = n.relu(f"{name}/relu_pool_proj", n.conv(f"{name}/pool_proj", d, pp, 1))
        return n.add(f"{name}/output", "Concat", [a, b, c, d], [f"{name}/output"])

    x = inception("inception_3b", inception("inception_3a", x, 64, 96, 128, 16, 32, 32), 128, 128, 192, 32, 96, 64)
    x = n.pool("pool3/3x3_s2", x, "MAX", 3, 2)
    for name, widths in (("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
                         ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
                         ("4e", (256, 160, 320, 32, 128, 128))):
        x = inception(f"inception_{name}", x, *widths)
    x = n.pool("pool4/3x3_s2", x, "MAX", 3, 2)
    x = inception("inception_5b", inception("inception_5a", x, 256, 160, 320, 32, 128, 128),
                  384, 192, 384, 48, 128, 128)
    x = n.pool("pool5/7x7_s1", x, "AVE", global_=True)
    n.add("pool5/drop_7x7_s1", "Dropout", [x], [x], "dropout_param { dropout_ratio: 0.4 }")
    x = n.add("loss3/classifier", "InnerProduct", [x], ["loss3/classifier"], "inner_product_param { num_output: 1000 }")
    n.add("prob", "Softmax", [x], ["prob"])
    n.write("googlenet")


def vgg_stages(n, x, widths, pad=1, first_pad=None, pools=5):
    """VGG-16's 3x3 stages (2, 2, 3, 3, 3 convolutions + ReLU), one per width; the first `pools` end in a 2x2 pool."""
    for stage, (count, width) in enumerate(zip((2, 2, 3, 3, 3), widths), 1):
        for i in range(1, count + 1):
            p = first_pad if (stage, i) == (1, 1) and first_pad is not None else pad
            x = n.relu(f"relu{stage}_{i}", n.conv(f"conv{stage}_{i}", x, width, 3, p=p))
        if stage <= pools:
            x = n.pool(f"pool{stage}", x, "MAX", 2, 2)
    return x


def fcn8s() -> None:
    n = Net("FCN-8s", (1, 3, 48, 48),
            "FCN-8s (Long, Shelhamer et al.), the layout of shelhamer/fcn.berkeleyvision.org voc-fcn8s:\n"
            "VGG-16 with pad 100 on conv1_1, fc6/fc7 as convolutions, Deconvolution without bias (upscore),\n"
            "Crop with offsets 5, 9 and 31, Eltwise SUM fusions. Input 48x48 and every width divided by 16 for the\n"
            "budget; the geometry (pad, crops, strides) is the original's.")
    x = vgg_stages(n, "data", (4, 8, 16, 32, 32), first_pad=100)
    x = n.add("drop6", "Dropout", [n.relu("relu6", n.conv("fc6", x, 256, 7))], ["fc6"],
              "dropout_param { dropout_ratio: 0.5 }")
    x = n.add("drop7", "Dropout", [n.relu("relu7", n.conv("fc7", x, 256, 1))], ["fc7"],
              "dropout_param { dropout_ratio: 0.5 }")
    x = n.conv("score_fr", x, 21, 1)

    def upscore(name, bottom, k, s):
        return n.add(name, "Deconvolution", [bottom], [name],
                     f"convolution_param {{ num_output: 21 bias_term: false kernel_size: {k} stride: {s} }}")

    def fuse(name, up, pool, offset):
        score = n.conv(f"score_{pool}", pool, 21, 1)
        crop = n.add(f"score_{pool}c", "Crop", [score, up], [f"score_{pool}c"],
                     f"crop_param {{ axis: 2 offset: {offset} }}")
        return n.add(f"fuse_{pool}", "Eltwise", [up, crop], [f"fuse_{pool}"], "eltwise_param { operation: SUM }")

    x = upscore("upscore_pool4", fuse("pool4", upscore("upscore2", x, 4, 2), "pool4", 5), 4, 2)
    x = upscore("upscore8", fuse("pool3", x, "pool3", 9), 16, 8)
    n.add("score", "Crop", [x, "data"], ["score"], "crop_param { axis: 2 offset: 31 }")
    n.write("fcn8s")


def dilation8() -> None:
    n = Net("Dilation8_front_end", (1, 3, 380, 380),
            "The front end of Yu & Koltun's dilation8_pascal_voc: VGG-16 without padding, pool4 and\n"
            "pool5 removed, conv5 dilated by 2, fc6 a 7x7 convolution dilated by 4. Every width divided by 32\n"
            "for the budget; 380x380 is the smallest input that leaves fc6 an output.")
    x = vgg_stages(n, "data", (2, 4, 8, 16), pad=0, pools=3)
    for i in (1, 2, 3):
        x = n.relu(f"relu5_{i}", n.conv(f"conv5_{i}", x, 16, 3, dilation=2))
    x = n.add("drop6", "Dropout", [n.relu("relu6", n.conv("fc6", x, 128, 7, dilation=4))], ["fc6"],
              "dropout_param { dropout_ratio: 0.5 }")
    x = n.add("drop7", "Dropout", [n.relu("relu7", n.conv("fc7", x, 128, 1))], ["fc7"],
              "dropout_param { dropout_ratio: 0.5 }")
    n.conv("fc-final", x, 21, 1)
    n.write("dilation8")


def ssd_head() -> None:
    n = Net("SSD_head", (1, 3, 64, 64),
            "An SSD300-style detector (Liu et al., weiliu89/caffe's VGG-reduced layout) at 64x64 with narrow\n"
            "widths: conv4_3 L2-normalised (Normalize, per-channel scale), fc6 dilated by 6, an extra stride-2\n"
            "source; per source a loc and a conf convolution, Permute to (N, H, W, C), Flatten and a PriorBox;\n"
            "everything concatenated, confidences reshaped and soft-maxed over the classes. DetectionOutput\n"
            "(no inference meaning for parity: it is a post-processing step) is left out.")
    x = n.pool("pool4", vgg_stages(n, "data", (8, 16, 32, 32), pools=3), "MAX", 2, 2)
    for i in (1, 2, 3):
        x = n.relu(f"relu5_{i}", n.conv(f"conv5_{i}", x, 32, 3, p=1))
    x = n.pool("pool5", x, "MAX", 3, 1, p=1)
    x = n.relu("relu6", n.conv("fc6", x, 64, 3, p=6, dilation=6))
    x = n.relu("relu7", n.conv("fc7", x, 64, 1))
    y = n.relu("conv6_1_relu", n.conv("conv6_1", x, 16, 1))
    y = n.relu("conv6_2_relu", n.conv("conv6_2", y, 32, 3, s=2, p=1))
    n.add("conv4_3_norm", "Normalize", ["conv4_3"], ["conv4_3_norm"],
          'norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } }')
    sources = (("conv4_3_norm", 30, 60, (2,), 8), ("fc7", 60, 111, (2, 3), 16), ("conv6_2", 111, 162, (2, 3), 32))
    locs, confs, priors = [], [], []
    for source, lo, hi, ratios, step in sources:
        boxes = 2 + 2 * len(ratios)
        for kind, width, out in (("loc", 4, locs), ("conf", 21, confs)):
            head = n.conv(f"{source}_mbox_{kind}", source, boxes * width, 3, p=1)
            perm = n.add(f"{head}_perm", "Permute", [head], [f"{head}_perm"],
                         "permute_param { order: 0 order: 2 order: 3 order: 1 }")
            out.append(n.add(f"{head}_flat", "Flatten", [perm], [f"{head}_flat"], "flatten_param { axis: 1 }"))
        ar = " ".join(f"aspect_ratio: {r}" for r in ratios)
        priors.append(n.add(f"{source}_mbox_priorbox", "PriorBox", [source, "data"], [f"{source}_mbox_priorbox"],
                            f"prior_box_param {{ min_size: {lo} max_size: {hi} {ar} flip: true clip: false "
                            f"variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: {step} offset: 0.5 }}"))
    n.add("mbox_loc", "Concat", locs, ["mbox_loc"], "concat_param { axis: 1 }")
    conf = n.add("mbox_conf", "Concat", confs, ["mbox_conf"], "concat_param { axis: 1 }")
    n.add("mbox_priorbox", "Concat", priors, ["mbox_priorbox"], "concat_param { axis: 2 }")
    conf = n.add("mbox_conf_reshape", "Reshape", [conf], ["mbox_conf_reshape"],
                 "reshape_param { shape { dim: 0 dim: -1 dim: 21 } }")
    conf = n.add("mbox_conf_softmax", "Softmax", [conf], ["mbox_conf_softmax"], "softmax_param { axis: 2 }")
    n.add("mbox_conf_flatten", "Flatten", [conf], ["mbox_conf_flatten"], "flatten_param { axis: 1 }")
    heads = [  # two DetectionOutput heads: CENTER_SIZE with top_k and keep_top_k; CORNER_SIZE, background 3, eta
        ("detection_out", "num_classes: 21 share_location: true background_label_id: 0 nms_param { "
                          "nms_threshold: 0.45 top_k: 100 } code_type: CENTER_SIZE keep_top_k: 60 "
                          "confidence_threshold: 0.05"),
        ("detection_eta", "num_classes: 21 background_label_id: 3 nms_param { nms_threshold: 0.7 top_k: 30 "
                          "eta: 0.9 } code_type: CORNER_SIZE confidence_threshold: 0.052"),
    ]
    for name, params in heads:
        n.add(name, "DetectionOutput", ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"], [name],
              f"detection_output_param {{ {params} }}")
    n.write("ssd")


if __name__ == "__main__":
    fcn8s()
    dilation8()
    ssd_head()
    caffenet()
    squeezenet()
    mobilenet()
    resnet50()
    googlenet()
