"""Qt-free core: data, models, training, inference and checkpoints.

Nothing in this package imports napari or Qt, so it runs on a headless GPU
server and is tested without a display.
"""
