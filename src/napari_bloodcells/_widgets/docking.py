"""Give the plugin's docks a usable share of the window, however they were opened.

napari stacks every dock widget it adds in the right-hand area. In its
opening window (1066x651) two stacked docks get a few hundred pixels at best,
and a dock added from the Plugins menu next to others may get under 130 px:
Train's progress, curves and preview, or Segment's button, are then out of
sight. So each of our docks, once napari has docked it, joins the plugin's
other docks as a tab when the window is short, and takes its share of the
column when it is tall.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QWidget

if TYPE_CHECKING:
    from collections.abc import Sequence

TABS_BELOW_HEIGHT = 900
"""Window height (px) under which the plugin's docks share the dock area as tabs."""

DOCK_PROPERTY = "napari_bloodcells_dock"
"""Qt property naming a plugin widget ("Train", "Segment"), so its dock can be told apart."""

SHARES = {"Train": 2}
"""Parts of a tall column each dock gets; others get 1 (Segment needs a third for its button)."""


def mark(widget: QWidget, name: str) -> None:
    """Name ``widget`` as the plugin's ``name`` dock and arrange it once napari has docked it."""
    widget.setProperty(DOCK_PROPERTY, name)
    # napari wraps the widget in its dock after the factory returns: look once it has.
    QTimer.singleShot(0, lambda: _arrange_around(widget))


def _arrange_around(widget: QWidget) -> None:
    try:
        dock = _dock_of(widget)
    except RuntimeError:  # the widget was deleted before the event loop came round
        return
    if dock is not None:
        arrange(dock)


def arrange(dock: QDockWidget) -> None:
    """Tabify ``dock`` with the plugin's other docks in a short window; share a tall one.

    Does nothing when it has no sibling in its dock area, or is already a tab of one.
    """
    window = dock.parentWidget()
    if not isinstance(window, QMainWindow):
        return
    area = window.dockWidgetArea(dock)
    siblings = [
        other
        for other in window.findChildren(QDockWidget)
        if other is not dock
        and not other.isHidden()
        and window.dockWidgetArea(other) == area
        and _name(other) is not None
    ]
    if not siblings:
        return
    if window.height() < TABS_BELOW_HEIGHT:
        tabbed = window.tabifiedDockWidgets(dock)
        if not any(other in tabbed for other in siblings):
            window.tabifyDockWidget(siblings[0], dock)
            dock.raise_()  # the dock just opened is the one the user asked to see
        return
    docks: Sequence[QDockWidget] = [*siblings, dock]
    shares = [SHARES.get(_name(d) or "", 1) for d in docks]
    height = window.height()
    sizes = [height * share // sum(shares) for share in shares]
    window.resizeDocks(list(docks), sizes, Qt.Orientation.Vertical)


def _dock_of(widget: QWidget) -> QDockWidget | None:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def _name(dock: QDockWidget) -> str | None:
    """The plugin widget's name inside ``dock``, or ``None`` for another plugin's dock."""
    for child in dock.findChildren(QWidget):
        value = child.property(DOCK_PROPERTY)
        if value:
            return str(value)
    return None
