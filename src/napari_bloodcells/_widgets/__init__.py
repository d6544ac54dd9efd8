"""The napari front end: thin widgets over :mod:`napari_bloodcells.core`.

``train_widget`` and ``segment_widget`` hold the two dock widgets; they share a
session (current model, training set, training lock) through :mod:`.session`.
Work runs in napari thread workers driving the Qt-free generators of
:mod:`.jobs`; :mod:`.plots` and :mod:`.preview` are the training views and
:mod:`.layers` reads and writes napari layers.
"""
