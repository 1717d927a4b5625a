"""Keras layers for Caffe semantics that no built-in Keras layer has.

Importing this package registers them with Keras' serialization (package "parity"), which is why
`import parity` is enough for `keras.saving.load_model` to read a converted `.keras` file.
"""
from .arithmetic import (CaffeArgMax, CaffeBroadcast, CaffeConstant, CaffeEltwise, CaffeNormalize, CaffeReduce, CaffeScale,
                         CaffeTile)
from .deconvolution import CaffeDeconvolution
from .detection import CaffeDetectionOutput
from .im2col import CaffeIm2col
from .indexing import CaffeBatchReindex, CaffeEmbed, CaffeParameter
from .lrn import CaffeLRN
from .pooling import CaffeMaxPoolMask, CaffePooling2D
from .proposal import CaffeProposal
from .recurrent import CaffeRecurrent
from .resampling import CaffeMaxUnpool, CaffePad, CaffeResize2D
from .slicing import CaffeCrop, CaffeSlice
from .unary import CaffeUnary

__all__ = ["CaffeArgMax", "CaffeBroadcast", "CaffeConstant", "CaffeCrop", "CaffeDeconvolution", "CaffeDetectionOutput", "CaffeEltwise", "CaffeLRN", "CaffeNormalize", "CaffePooling2D", "CaffeReduce", "CaffeScale",
           "CaffeSlice", "CaffeTile", "CaffeUnary",
           "CaffeBatchReindex", "CaffeEmbed", "CaffeIm2col", "CaffeParameter", "CaffeRecurrent",
           "CaffeMaxPoolMask", "CaffeMaxUnpool", "CaffePad", "CaffeProposal", "CaffeResize2D"]
