"""A second source of truth: frozen TensorFlow graphs (.pb) rewritten by hand as Keras models.

graph: the GraphDef as a parity Net, with each 4-D output's layout; dump: run the graph, write a
reference folder (`parity dump-tf`); weights: move the graph's Const weights into the Keras model
by name (`parity tf-import`); target: check the Keras model's layers against the graph's ops by
name scope, with the same capture, comparison and reports as for Caffe.
"""
