"""Reading Caffe's files without Caffe: the prototxt (text), the caffemodel (binary) and a writer.

Nothing here imports TensorFlow: `parity dump` runs these readers inside the pycaffe environment.
"""
