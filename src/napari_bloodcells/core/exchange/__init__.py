"""Models in and out of the plugin: bioimage.io packages, ONNX, and opening any model file."""
