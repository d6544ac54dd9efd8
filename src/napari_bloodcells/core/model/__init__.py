"""The model: networks, preprocessing, the folded inference copy, the size model, and
checkpoints (:class:`~napari_bloodcells.core.model.trained.TrainedModel`).
"""
