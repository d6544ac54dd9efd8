"""Open napari with both widgets docked and the blood-cell sample loaded."""

from __future__ import annotations


def launch(sample: str | None = "bloodcells") -> None:
    """Start a napari viewer ready for training and segmenting; blocks until it closes.

    Parameters
    ----------
    sample : str or None
        Key of the sample to open (``"bloodcells"`` or ``"single_cell"``), or
        ``None`` for an empty viewer.
    """
    import napari

    viewer = napari.Viewer(title="napari-bloodcells")
    viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    if sample:
        viewer.open_sample("napari-bloodcells", sample)
    napari.run()
