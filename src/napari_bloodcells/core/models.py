"""The import path that bioimage.io packages exported before the core was grouped by job name.

Their ``rdf.yaml`` gives ``import_from: napari_bloodcells.core.models`` for the notebook
U-Net, so the name must keep importing for those packages to run; new exports name
:mod:`napari_bloodcells.core.model.networks`.
"""

from napari_bloodcells.core.model.networks import NotebookUNet

__all__ = ["NotebookUNet"]
