"""The Caffe side: reading Caffe's files, the net as a graph with Caffe's shapes, fixtures and their
weight recipes, and running real Caffe to dump reference blobs. It never imports TensorFlow: `parity
dump` runs it inside the pycaffe environment, which has none (tests/test_structure.py keeps it so)."""
