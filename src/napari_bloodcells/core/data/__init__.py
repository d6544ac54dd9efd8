"""Training data: reading image and mask folders, the downloads (Dataset 1, smear fields)
and writing label files. Imports only :mod:`~napari_bloodcells.core.base`.
"""
