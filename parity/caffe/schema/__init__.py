"""parity's own protobuf schema for Caffe's model format.

``caffe.proto`` in this folder is a fresh description of the messages Caffe uses for
networks and weights (NetParameter, LayerParameter with every layer parameter of the
brocolli-caffe 9.0.2 fork, the legacy V1/V0 layer formats, blobs, fillers). Field
numbers and defaults match Caffe's, so ``.prototxt`` and ``.caffemodel`` files from real
Caffe parse here without pycaffe being installed. The protobuf package is ``parity.caffe``
rather than ``caffe``: text and wire formats do not depend on it, and pycaffe's own
descriptors (package ``caffe``) can then load in the same process, as `parity dump` needs.

``caffe_pb2.py`` is generated from ``caffe.proto`` by ``tools/gen_schema.sh``; do not
edit it by hand, edit the ``.proto`` and regenerate.
"""

from . import caffe_pb2

__all__ = ["caffe_pb2"]
