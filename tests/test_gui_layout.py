"""What a new user sees in napari's opening window (1066x651) and in a large one."""

from __future__ import annotations

import pytest

from gui_helpers import RUN_TIMEOUT_MS, add_cells, tiny_run, use_layers
from napari_bloodcells._launch import dock_widgets

pytestmark = pytest.mark.gui


def fully_shown(widget) -> bool:
    """Whether every pixel of the Qt ``widget`` is on screen, not scrolled or folded away."""
    if not widget.isVisible():
        return False
    region = widget.visibleRegion().boundingRect()
    return region.size() == widget.size()


@pytest.fixture
def shown_viewer(make_napari_viewer):
    """A napari window on the (virtual) screen, as a user sees it."""
    return make_napari_viewer(show=True)


@pytest.mark.parametrize("size", [(1066, 651), (1600, 1000)])
def test_progress_plot_preview_and_segment_button_in_view_while_training(
    shown_viewer, qtbot, cell_stack, size, data_env
):
    viewer = shown_viewer
    viewer.window._qt_window.resize(*size)
    qtbot.waitUntil(lambda: viewer.window.geometry()[2:] == size, timeout=5000)
    train, segment = dock_widgets(viewer)
    image, labels = add_cells(viewer, cell_stack, count=8)
    use_layers(train, image, labels)
    tiny_run(train, epochs=2)
    train.start()
    qtbot.waitUntil(lambda: len(train.plot.epochs) >= 1, timeout=RUN_TIMEOUT_MS)
    try:
        qtbot.wait(100)
        for part in (train.progress.native, train.plot, train.preview, train.stop_button.native):
            region = part.visibleRegion().boundingRect()
            assert fully_shown(part), f"{part} shows {region} of {part.size()} at {size}"
        assert not train.setup_section.isExpanded()
        if size[1] < 900:  # tabs: the Segment tab shows its button when picked
            segment.native.parentWidget().raise_()
            qtbot.wait(50)
        for part in (segment.segment_button.native, segment.progress.native):
            assert fully_shown(part), f"Segment's {part} is hidden at {size}"
    finally:
        train.stop()
        qtbot.waitUntil(lambda: not train.running, timeout=RUN_TIMEOUT_MS)


def plugins_menu_action(viewer, title: str):
    """The Plugins menu entry that opens the plugin's ``title`` dock, as a user clicks it."""
    for entry in viewer.window.plugins_menu.actions():
        for action in entry.menu().actions() if entry.menu() else ():
            if action.text().startswith(f"{title} ("):
                return action
    raise AssertionError(f"no {title} entry in the Plugins menu")


@pytest.mark.parametrize("order", [("Train", "Segment"), ("Segment", "Train")])
def test_docks_opened_from_the_plugins_menu_get_the_whole_height_as_tabs(
    shown_viewer, qtbot, order
):
    from qtpy.QtWidgets import QDockWidget

    from napari_bloodcells._widgets.segment_widget import SegmentWidget
    from napari_bloodcells._widgets.train_widget import TrainWidget

    viewer = shown_viewer
    size = (1066, 651)
    viewer.window._qt_window.resize(*size)
    qtbot.waitUntil(lambda: viewer.window.geometry()[2:] == size, timeout=5000)
    for title in order:
        plugins_menu_action(viewer, title).trigger()
        qtbot.wait(50)  # the dock arranges itself once the event loop runs
    widgets = list(viewer.window.dock_widgets.values())
    train = next(w for w in widgets if isinstance(w, TrainWidget))
    segment = next(w for w in widgets if isinstance(w, SegmentWidget))

    def dock_of(widget) -> QDockWidget:
        parent = widget.native.parentWidget()
        while not isinstance(parent, QDockWidget):
            parent = parent.parentWidget()
        return parent

    window = viewer.window._qt_window
    assert window.tabifiedDockWidgets(dock_of(train)) == [dock_of(segment)], "one tabbed dock"
    opened_last = train if order[-1] == "Train" else segment
    assert opened_last.native.isVisible(), "the dock just opened is the tab shown"
    for widget, parts in (
        (train, (train.progress.native, train.start_button.native)),
        (segment, (segment.model_info.native, segment.segment_button.native)),
    ):
        dock_of(widget).raise_()
        qtbot.wait(50)
        assert widget.native.height() > 400, f"{widget} got {widget.native.height()} px"
        for part in parts:
            assert fully_shown(part), f"{part} of {widget} is hidden at {size}"


def test_save_field_has_a_label(viewer):
    train, _ = dock_widgets(viewer)
    assert train.save_path.label == "Save to"
    labels = [w.text() for w in train.native.findChildren(type(train.status.native))]
    assert "Save to" in labels


def test_nucleus_curve_is_lightened_on_the_dark_theme_only(viewer):
    from napari_bloodcells._widgets.plots import MIN_LUMINANCE_ON_DARK, luminance

    train, _ = dock_widgets(viewer)
    viewer.theme = "dark"
    dark_blue = train.plot.curve_color("nucleus")
    viewer.theme = "light"
    light_blue = train.plot.curve_color("nucleus")
    from matplotlib.colors import to_rgb

    assert luminance(to_rgb(dark_blue)) >= MIN_LUMINANCE_ON_DARK - 1e-6
    assert to_rgb(light_blue) == (0.0, 0.0, 1.0)
    assert to_rgb(dark_blue)[2] == 1.0  # still blue


def test_the_plot_is_drawn_off_the_main_thread(viewer, qtbot):
    import threading

    from napari_bloodcells.core.events import EpochEnded

    train, _ = dock_widgets(viewer)
    plot = train.plot
    with qtbot.waitSignal(plot.drawn, timeout=10_000):
        plot.add_epoch(EpochEnded(1, 3, 0.9, 1.1, (0.9, 0.5, 0.6), (0.8, 0.4, 0.5), 1.0, True))
    assert not plot.pixmap().isNull()
    assert plot.drawing_thread is not None
    assert plot.drawing_thread != threading.get_ident()
