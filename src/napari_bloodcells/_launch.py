"""Open napari with both widgets docked and the blood-cell sample loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari_bloodcells.errors import BloodcellsError

if TYPE_CHECKING:
    import napari


def open_viewer(sample: str | None = "bloodcells") -> napari.Viewer:
    """A napari viewer with the Train and Segment widgets docked and ``sample`` opened.

    A sample that cannot be loaded (no network, say) is reported as a
    notification; the viewer still opens, ready for the user's own images.

    Parameters
    ----------
    sample : str or None
        Key of the sample to open (``"bloodcells"`` or ``"single_cell"``), or
        ``None`` for an empty viewer.
    """
    import napari
    from napari.utils.notifications import show_error

    viewer = napari.Viewer(title="napari-bloodcells")
    viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    if sample:
        try:
            viewer.open_sample("napari-bloodcells", sample)
        except BloodcellsError as exc:
            show_error(str(exc))
    return viewer


def launch(sample: str | None = "bloodcells") -> None:
    """Open the viewer (see :func:`open_viewer`) and block until it closes."""
    import napari

    open_viewer(sample)
    napari.run()
