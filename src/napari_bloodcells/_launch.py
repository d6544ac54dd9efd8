"""Open napari with both widgets docked and the blood-cell sample loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    dock_widgets(viewer)
    if sample:
        try:
            viewer.open_sample("napari-bloodcells", sample)
        except BloodcellsError as exc:
            show_error(str(exc))
    return viewer


def dock_widgets(viewer: napari.Viewer) -> tuple[Any, Any]:
    """Dock Train and Segment, as tabs of one dock when the window is short.

    The docks arrange themselves as when opened from the Plugins menu (see
    :mod:`napari_bloodcells._widgets.docking`); here Train is the tab shown.

    Returns
    -------
    tuple
        The Train and Segment widgets.
    """
    from qtpy.QtCore import QTimer

    from napari_bloodcells._widgets.docking import arrange

    train_dock, train = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    segment_dock, segment = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Segment")
    arrange(segment_dock)
    # Qt picks the tab shown once the event loop runs: pick Train after that.
    QTimer.singleShot(0, train_dock.raise_)
    return train, segment


def launch(sample: str | None = "bloodcells") -> None:
    """Open the viewer (see :func:`open_viewer`) and block until it closes."""
    import napari

    open_viewer(sample)
    napari.run()
