"""Datasets, training, evaluation and bundle export for the mammogate CNN.

``synthetic`` writes synthetic 4-view screening studies with known lesions; ``train`` trains the
fully convolutional heatmap model on them through the same preprocessing as inference and writes
a model bundle. TensorFlow is imported lazily inside the training functions.
"""
