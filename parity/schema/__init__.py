"""parity's own protobuf schema for Caffe's model format.

``caffe.proto`` in this folder is a fresh description of the messages Caffe uses for
networks and weights (NetParameter, LayerParameter with every layer parameter of the
brocolli-caffe 9.0.2 fork, the legacy V1/V0 layer formats, blobs, fillers). Field
numbers and defaults match Caffe's, and the package is ``caffe``, so ``.prototxt`` and
``.caffemodel`` files from real Caffe parse here without pycaffe being installed.

``caffe_pb2.py`` is generated from ``caffe.proto`` by ``tools/gen_schema.sh``; do not
edit it by hand, edit the ``.proto`` and regenerate.
"""

from . import caffe_pb2

__all__ = ["caffe_pb2"]
