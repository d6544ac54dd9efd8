"""Errors that a user can act on.

Every exception defined here carries one plain sentence that says what is
wrong and how to fix it. The CLI prints it without a traceback and the widgets
show it as a napari notification; anything else is a bug and keeps its
traceback.
"""


class BloodcellsError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""


class DataError(BloodcellsError):
    """Training or segmentation data is missing, malformed or inconsistent."""


class DownloadError(BloodcellsError):
    """The dataset or pretrained weights could not be downloaded or verified."""


class CheckpointError(BloodcellsError):
    """A checkpoint file cannot be read, or is not a napari-bloodcells model."""


class ConfigError(BloodcellsError):
    """A training or inference setting is out of range."""
