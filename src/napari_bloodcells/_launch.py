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


TABS_BELOW_HEIGHT = 900
"""Window height (px) under which Train and Segment share the dock area as tabs."""


def dock_widgets(viewer: napari.Viewer) -> tuple[Any, Any]:
    """Dock Train above Segment, or as tabs of one dock when the window is short.

    In napari's opening window (1066x651) two stacked docks get about 280 px
    each: not enough for Train's progress, curves and preview, nor for the
    Segment button below the image and model. As tabs each gets the whole
    height; from :data:`TABS_BELOW_HEIGHT` up both are shown at once.

    Returns
    -------
    tuple
        The Train and Segment widgets.
    """
    height = viewer.window.geometry()[3]
    tabs = height < TABS_BELOW_HEIGHT
    train_dock, train = viewer.window.add_plugin_dock_widget("napari-bloodcells", "Train")
    segment_dock, segment = viewer.window.add_plugin_dock_widget(
        "napari-bloodcells", "Segment", tabify=tabs
    )
    from qtpy.QtCore import Qt, QTimer

    if tabs:
        # Qt picks the tab shown once the event loop runs: pick Train after that.
        QTimer.singleShot(0, train_dock.raise_)
    else:
        # Segment needs about a third of the column to show its button; Train the rest.
        main_window = train_dock.parentWidget()
        main_window.resizeDocks(
            [train_dock, segment_dock], [2 * height // 3, height // 3], Qt.Orientation.Vertical
        )
    return train, segment


def launch(sample: str | None = "bloodcells") -> None:
    """Open the viewer (see :func:`open_viewer`) and block until it closes."""
    import napari

    open_viewer(sample)
    napari.run()
