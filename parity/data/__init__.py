"""The files both sides share: reference folders (.npy.gz blobs and their manifests), the NCHW <->
NHWC layouts, image preprocessing and pinned PyPI downloads. No TensorFlow, no Caffe."""
