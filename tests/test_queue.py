"""The correction queue's core: scoring, ranking, the project folder, and `suggest`."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pytest

from bad_inputs import untrained_model
from conftest import SHARED_FIELDS
from napari_bloodcells import cli
from napari_bloodcells.core.data.project import Project, Suggestion
from napari_bloodcells.core.events import Notice, Ranked, run_to_end
from napari_bloodcells.core.inference.suggest import suggestion
from napari_bloodcells.core.jobs import suggest_job
from napari_bloodcells.core.model.checkpoint import save_checkpoint
from napari_bloodcells.errors import DataError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def fields(tmp_path) -> Path:
    """A folder of 5 real smear fields (BCCD, 640x480)."""
    folder = tmp_path / "fields"
    folder.mkdir()
    for path in sorted((SHARED_FIELDS / "JPEGImages").glob("*.jpg"))[:5]:
        shutil.copy(path, folder / path.name)
    return folder


def test_the_score_is_the_share_painted_as_a_cell_plus_the_share_painted_as_a_nucleus(
    few_cells,
):
    model = untrained_model(native=True)
    image = few_cells.images[0]
    s = suggestion(model, image, "cell.png")
    from napari_bloodcells.core.inference.tiled import segment_image

    labels, confidence = segment_image(model, image, confidence=True)
    assert s.painted == pytest.approx(float((labels > 0).mean()))
    assert s.nucleus == pytest.approx(float((labels == 2).mean()))
    assert s.score == pytest.approx(s.painted + s.nucleus)
    assert s.uncertain == pytest.approx(float((confidence < 0.9).mean()))
    assert s.name == "cell.png" and s.scale == 1.0


def test_ranking_puts_the_most_painted_image_first_and_ends_with_ranked(few_cells):
    model = untrained_model(native=True)
    blank = np.full_like(few_cells.images[0], 255)
    named = [("blank", blank), ("cell 0", few_cells.images[0]), ("cell 1", few_cells.images[1])]
    events = list(suggest_job(model, named))
    assert isinstance(events[-1], Ranked)
    ranked = events[-1].result
    assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)
    assert {s.name for s in ranked} == {"blank", "cell 0", "cell 1"}
    assert run_to_end(suggest_job(model, named)) == ranked  # deterministic


def test_an_unreadable_file_is_skipped_with_one_line_and_the_rest_go_on(fields):
    (fields / "broken.png").write_bytes(b"not an image")
    events = list(suggest_job(untrained_model(native=True), [fields]))
    skipped = [e.message for e in events if isinstance(e, Notice)]
    assert len(skipped) == 1 and "broken.png" in skipped[0] and "\n" not in skipped[0]
    assert len(events[-1].result) == 5


def test_an_empty_folder_is_one_sentence(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image") as raised:
        run_to_end(suggest_job(untrained_model(native=True), [tmp_path / "empty"]))
    assert str(raised.value).endswith("choose a folder of images.")


def test_a_stopped_ranking_ranks_the_images_scored_so_far(fields):
    calls = iter(range(100))
    ranked = run_to_end(
        suggest_job(untrained_model(native=True), [fields], should_stop=lambda: next(calls) >= 2)
    )
    assert len(ranked) == 2


def test_the_project_keeps_pairs_queue_and_marks_across_reopening(tmp_path, few_cells):
    project = Project.open(tmp_path / "project")
    ranked = [Suggestion(f"/data/{n}.png", 1.0 - n / 10, 0.1, 0.05, 0.2, 0.5) for n in range(3)]
    project.set_queue(ranked)
    project.add_pair(few_cells.images[0], few_cells.masks[0], "/data/0.png", 0.5)
    again = Project.open(tmp_path / "project")
    assert [e.name for e in again.queue] == [s.name for s in ranked]
    assert [e.corrected for e in again.queue] == [True, False, False]
    assert again.queue[0].suggestion == ranked[0]
    data = again.training_data()
    np.testing.assert_array_equal(data.images[0], few_cells.images[0])
    np.testing.assert_array_equal(data.masks[0], few_cells.masks[0])
    assert again.pairs[0].source == "/data/0.png" and again.pairs[0].scale == 0.5
    assert again.next_to_correct().name == "/data/1.png"
    # A new ranking keeps what was corrected.
    again.set_queue(list(reversed(ranked)))
    assert [e.corrected for e in Project.open(tmp_path / "project").queue] == [False, False, True]


def test_a_project_folder_is_a_training_folder(tmp_path, few_cells):
    from napari_bloodcells.core.data.dataset import load_folder

    project = Project.open(tmp_path / "project")
    for i in range(2):
        project.add_pair(few_cells.images[i], few_cells.masks[i], f"cell {i}", 1.0)
    assert len(load_folder(tmp_path / "project")) == 2


def test_a_project_of_a_newer_version_is_one_sentence(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    record = {"format": "napari-bloodcells-project", "version": 99, "queue": [], "pairs": []}
    (folder / "project.json").write_text(json.dumps(record))
    with pytest.raises(DataError, match="newer napari-bloodcells") as raised:
        Project.open(folder)
    assert str(raised.value).count(". ") == 0 and str(raised.value).endswith("open it.")


def test_a_damaged_project_file_is_one_sentence(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "project.json").write_text("{ not json")
    with pytest.raises(DataError, match="cannot be read"):
        Project.open(folder)


def test_suggest_prints_the_images_ranked_and_writes_the_csv(tmp_path, fields, capsys):
    model = save_checkpoint(untrained_model(native=True), tmp_path / "model.pt")
    out = tmp_path / "ranked.csv"
    argv = ["suggest", str(model), str(fields), "--top", "3", "--out", str(out), "--scale", "0.5"]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    scores = [float(line.rsplit("score ", 1)[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert all(line.split(": score")[0].endswith(".jpg") for line in lines)
    rows = out.read_text().strip().splitlines()
    assert rows[0].startswith("image,score") and len(rows) == 6
    assert rows[1].split(",")[0] == lines[0].split(": score")[0]


def test_suggest_on_an_empty_folder_is_one_line(tmp_path, capsys):
    model = save_checkpoint(untrained_model(native=True), tmp_path / "model.pt")
    (tmp_path / "empty").mkdir()
    assert cli.main(["suggest", str(model), str(tmp_path / "empty")]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
