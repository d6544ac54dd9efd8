"""Applying a model: tiled segmentation of images and stacks, and estimating an image's
magnification with the size model.
"""
