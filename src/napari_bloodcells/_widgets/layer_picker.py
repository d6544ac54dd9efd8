"""A layer drop-down that follows the viewer's layers until the user picks one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox

from napari_bloodcells._widgets.layers import META_KEY

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


def _kinds(first: str) -> tuple[type[Layer], type[Layer]]:
    from napari.layers import Image, Labels

    return (Image, Labels) if first == "image" else (Labels, Image)


class LayerPicker(ComboBox):
    """Image and Labels layers of ``viewer``, those of kind ``first`` listed first.

    Both kinds are offered: masks read from files open as Image layers, and
    picking the wrong kind gets a plain message rather than an empty list.
    Until the user picks a layer, the picker moves to the first layer of its
    own kind as layers arrive, so opening an image and its labels (the sample,
    say) leaves both pickers ready. A layer of its own kind that the user opens
    later is picked too, whatever was picked before: the image just opened is
    the one to work on. Layers this plugin writes (predictions, confidence)
    never move the picker. Call :meth:`reset_choices` when the viewer's layers
    change.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose layers are offered.
    first : {"image", "labels"}
        The kind this picker is for.
    **kwargs
        Passed to :class:`magicgui.widgets.ComboBox` (``label``, ``tooltip``, ...).
    """

    def __init__(self, viewer: napari.viewer.Viewer, first: str, **kwargs: Any) -> None:
        self._viewer = viewer
        self._kinds = _kinds(first)
        self._following = True
        self._resetting = False
        self._known: set[int] = {id(layer) for layer in viewer.layers}
        super().__init__(choices=self._layers, **kwargs)
        self.changed.connect(self._on_changed)

    def _layers(self, _widget: Any = None) -> list[tuple[str, Layer]]:
        layers: list[Layer] = list(self._viewer.layers)
        return [
            (layer.name, layer)
            for kind in self._kinds
            for layer in layers
            if isinstance(layer, kind)
        ]

    def reset_choices(self, *_: Any) -> None:
        """Re-read the viewer's layers; follow the first of this kind until the user picks."""
        self._resetting = True
        try:
            super().reset_choices()
            own_kind = [c for c in self.choices if isinstance(c, self._kinds[0])]
            opened = [
                layer
                for layer in own_kind
                if id(layer) not in self._known and not layer.metadata.get(META_KEY)
            ]
            self._known = {id(layer) for layer in self._viewer.layers}
            if opened and len(opened) < len(own_kind):
                self.value = opened[-1]
            elif self._following and own_kind and not isinstance(self.value, self._kinds[0]):
                self.value = own_kind[0]
        finally:
            self._resetting = False

    def _on_changed(self, _value: object) -> None:
        if not self._resetting:
            self._following = False
