"""The installed package exposes a valid npe2 manifest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import npe2


def test_npe2_discovers_the_installed_plugin():
    pm = npe2.PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-bloodcells")
    commands = {c.id for c in manifest.contributions.commands}
    assert {
        "napari-bloodcells.make_train_widget",
        "napari-bloodcells.make_segment_widget",
        "napari-bloodcells.load_bloodcells_sample",
    } <= commands
    assert {w.display_name for w in manifest.contributions.widgets} == {"Train", "Segment"}
    samples = {s.key: s.display_name for s in manifest.contributions.sample_data}
    assert "Jiangxi Tecom" in samples["bloodcells"]


def test_npe2_validate_passes():
    npe2_cli = Path(sys.executable).with_name("npe2")
    done = subprocess.run(
        [str(npe2_cli), "validate", "napari-bloodcells"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout


def test_manifest_in_package_is_the_root_manifest():
    import napari_bloodcells

    packaged = Path(napari_bloodcells.__file__).with_name("napari.yaml")
    root = Path(__file__).resolve().parents[1] / "napari.yaml"
    assert packaged.read_text() == root.read_text()
