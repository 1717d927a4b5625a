"""VGG-19 written by hand in Keras, layers named like Caffe's: what a person porting the Model Zoo
writes. Standard Keras layers only ('same' padding is Caffe's pad 1 for 3x3 stride-1 convolutions,
and 2x2/2 pooling rounds alike at 224). `build_vgg19_shifted_pad` moves conv3_2's padding to the
bottom/right, the TF habit that breaks ported nets."""
from __future__ import annotations

import keras

BLOCKS = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]


def build_vgg19(shifted: str | None = None) -> keras.Model:
    x = inputs = keras.Input((224, 224, 3), name="data")
    for b, (width, n) in enumerate(BLOCKS, 1):
        for i in range(1, n + 1):
            name = f"conv{b}_{i}"
            if name == shifted:
                x = keras.layers.ZeroPadding2D(((0, 2), (0, 2)), name=f"{name}_pad")(x)
                x = keras.layers.Conv2D(width, 3, padding="valid", name=name)(x)
            else:
                x = keras.layers.Conv2D(width, 3, padding="same", name=name)(x)
            x = keras.layers.ReLU(name=f"relu{b}_{i}")(x)
        x = keras.layers.MaxPooling2D(2, 2, name=f"pool{b}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for k in (6, 7):
        x = keras.layers.Dense(4096, name=f"fc{k}")(x)
        x = keras.layers.ReLU(name=f"relu{k}")(x)
        x = keras.layers.Dropout(0.5, name=f"drop{k}")(x)
    x = keras.layers.Dense(1000, name="fc8")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="prob")(x), name="vgg19_by_hand")


def build_vgg19_shifted_pad() -> keras.Model:
    return build_vgg19(shifted="conv3_2")
