"""What a check runs on. `Target` is the base (and the Caffe case); `target_from_fixture` chooses the kind
from the fixture (Caffe, or a TensorFlow graph: targets.tfgraph)."""
from .base import Target, restricted
from .caffe import model_name, target_from_files, target_from_fixture, up_to

__all__ = ["Target", "model_name", "restricted", "target_from_files", "target_from_fixture", "up_to"]
