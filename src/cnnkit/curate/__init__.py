"""Knowing the data: wrong labels, near-duplicates, what to label next and a map.

Each tool works on codes of the images: the frozen pretrained EfficientNet-Lite0's
(bundled, offline) or a run's own model's (:mod:`cnnkit.curate.codes`).
"""
