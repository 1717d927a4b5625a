"""What a check runs on. `Target` is the base the pipeline knows; each source is a subclass: `CaffeTarget`
(converted by parity), `HandwrittenTarget` (Caffe's weights in the user's Keras model), `GraphTarget`
(a frozen TensorFlow graph's dump, targets.tfgraph). `from_fixture` chooses the kind from the fixture."""
from .base import Target, restricted
from .caffe import CaffeTarget, HandwrittenTarget, from_files, from_fixture, model_name, up_to

__all__ = ["CaffeTarget", "HandwrittenTarget", "Target", "from_files", "from_fixture", "model_name", "restricted",
           "up_to"]
