"""The installed package exposes a valid npe2 manifest."""

from __future__ import annotations

import json
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


def _site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_the_built_wheel_carries_the_root_manifest(tmp_path):
    """Build the wheel, install it in a fresh venv, and let npe2 find its manifest.

    Under an editable install the package's napari.yaml is a symlink to the
    root file, so comparing the two proves nothing; the wheel must carry a copy.
    The venv gets the wheel alone; the other packages (npe2 and its
    dependencies) are borrowed from this environment without this plugin, so
    nothing is downloaded.
    """
    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"),
            *("-w", str(wheels), str(root)),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("napari_bloodcells-*.whl")
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True
    )
    site = _site_packages(venv)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q"),
            *("--target", str(site), str(wheel)),
        ],
        check=True,
        capture_output=True,
    )
    # Everything this environment has, except this plugin, through symbolic links.
    borrowed = tmp_path / "borrowed"
    borrowed.mkdir()
    here = Path(npe2.__file__).resolve().parents[1]
    for entry in here.iterdir():
        if "napari_bloodcells" not in entry.name and entry.suffix != ".pth":
            (borrowed / entry.name).symlink_to(entry)
    (site / "zz-borrowed.pth").write_text(f"{borrowed}\n")

    installed = site / "napari_bloodcells" / "napari.yaml"
    assert installed.is_file() and not installed.is_symlink()
    assert installed.read_text() == (root / "napari.yaml").read_text()
    probe = (
        "import json, npe2; pm = npe2.PluginManager(); pm.discover(); "
        "m = pm.get_manifest('napari-bloodcells'); "
        "print(json.dumps({'manifest': m.model_dump(mode='json', exclude={'package_metadata'})}))"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    expected = npe2.PluginManifest.from_file(root / "napari.yaml").model_dump(
        mode="json", exclude={"package_metadata"}
    )
    assert found["manifest"]["contributions"] == expected["contributions"]
    assert found["manifest"]["display_name"] == expected["display_name"]
