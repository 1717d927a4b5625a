"""Keras layers for Caffe semantics that no built-in Keras layer has, one module per converter family
(keras_layers/X.py holds the layers convert/X.py builds).

Importing this package registers them with Keras' serialization (package "parity"), which is why
`import parity` is enough for `keras.saving.load_model` to read a converted `.keras` file. Registration
is by class name, so moving a layer between modules never breaks a saved model.
"""
from .convolution import CaffeDeconvolution
from .detection import CaffeDetectionOutput
from .elementwise import CaffeUnary
from .indexing import CaffeBatchReindex, CaffeEmbed, CaffeParameter
from .merge import CaffeEltwise
from .normalization import CaffeBroadcast, CaffeLRN, CaffeNormalize, CaffeScale
from .pooling import CaffeMaxPoolMask, CaffeMaxUnpool, CaffePooling2D
from .priorbox import CaffeConstant
from .proposal import CaffeProposal
from .recurrent import CaffeRecurrent
from .reduction import CaffeArgMax, CaffeReduce
from .resampling import CaffePad, CaffeResize2D
from .reshaping import CaffeCrop, CaffeSlice, CaffeTile
from .windows import CaffeIm2col

__all__ = ["CaffeArgMax", "CaffeBatchReindex", "CaffeBroadcast", "CaffeConstant", "CaffeCrop", "CaffeDeconvolution",
           "CaffeDetectionOutput", "CaffeEltwise", "CaffeEmbed", "CaffeIm2col", "CaffeLRN", "CaffeMaxPoolMask",
           "CaffeMaxUnpool", "CaffeNormalize", "CaffePad", "CaffeParameter", "CaffePooling2D", "CaffeProposal",
           "CaffeRecurrent", "CaffeReduce", "CaffeResize2D", "CaffeScale", "CaffeSlice", "CaffeTile", "CaffeUnary"]
