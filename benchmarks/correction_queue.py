"""Which fields to correct: the fields `suggest` ranks first against fields drawn at random.

On BCCD's smear fields (``../shared/data/BCCD-trainval``), measured as
``smear_fields.py`` does (nucleus recall and precision from the white-cell boxes):

1. the scale ``S`` that ``--scale auto`` gives on the train split (median of 40 fields);
2. ``napari-bloodcells suggest BASE <train fields> --scale S --out ranked.csv`` as a whole
   process, timed, on the first 100 train fields and on all of them;
3. the first 10 fields of the ranking corrected the way a user does (the prediction outside
   the white-cell boxes erased), the product's fine-tune, and the val split scored;
4. the same for 10 fields drawn at random (several draws, the median) and for the first 10
   by name;
5. how many of the suggested fields reach the gain of 10 random fields.

    python benchmarks/correction_queue.py base.pt [--draws 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import hardware, median, write_json
from napari_bloodcells.core.data.smear_fields import Field, load_fields
from napari_bloodcells.core.model.checkpoint import load_checkpoint
from smear_fields import FIELDS, auto_scale, fine_tune, score_fields, write_corrections

if TYPE_CHECKING:
    from napari_bloodcells.core.model.trained import TrainedModel


def suggest(base: Path, fields: list[Field], scale: float, out: Path) -> tuple[float, list[str]]:
    """``napari-bloodcells suggest`` as a whole process; (seconds, field names ranked)."""
    command = [
        sys.executable,
        "-m",
        "napari_bloodcells.cli",
        "suggest",
        str(base),
        *(str(f.image_path) for f in fields),
        "--scale",
        f"{scale:.4g}",
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"suggest failed:\n{done.stdout}\n{done.stderr}")
    with open(out, newline="", encoding="utf-8") as handle:
        ranked = [Path(row["image"]).stem for row in csv.DictReader(handle)]
    return seconds, ranked


def precision_after(
    base: Path, model: TrainedModel, chosen: list[Field], val: list[Field], scale: float
) -> dict:
    """Correct ``chosen`` with ``model`` (read from ``base``), fine-tune with the product's
    command, score the val fields."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_corrections(model, chosen, scale, Path(tmp) / "fields")
        seconds, _ = fine_tune(base, folder, scale, Path(tmp) / "ft.pt")
        tuned = load_checkpoint(Path(tmp) / "ft.pt")
    after = score_fields(tuned, val, scale)
    return {"precision": after.precision, "recall": after.recall, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("base", type=Path, help="a model from napari-bloodcells train")
    parser.add_argument("--fields", type=Path, default=FIELDS)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--corrections", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(hardware())
    base = load_checkpoint(args.base)
    train = load_fields(args.fields, "train")
    val = load_fields(args.fields, "val")
    scale = auto_scale(base, train)
    zero = score_fields(base, val, scale)
    print(
        f"scale {scale:.3f}; zero-shot val recall {zero.recall:.3f}, precision {zero.precision:.3f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        seconds_100, _ = suggest(args.base, train[:100], scale, Path(tmp) / "r100.csv")
        seconds_all, ranked = suggest(args.base, train, scale, Path(tmp) / "rall.csv")
    print(
        f"suggest, whole process: 100 fields {seconds_100:.1f} s, "
        f"{len(train)} fields {seconds_all:.1f} s"
    )
    by_name = {f.name: f for f in train}
    n = args.corrections
    gain = {}

    def run(label: str, chosen: list[Field]) -> dict:
        result = precision_after(args.base, base, chosen, val, scale)
        result["gain"] = result["precision"] - zero.precision
        print(
            f"{label}: precision {result['precision']:.3f} (gain {result['gain']:+.3f}), "
            f"recall {result['recall']:.3f}, fine-tune {result['seconds']:.1f} s"
        )
        return result

    gain["suggested"] = run(f"first {n} suggested", [by_name[name] for name in ranked[:n]])
    gain["by_name"] = run(f"first {n} by name", sorted(train, key=lambda f: f.name)[:n])
    randoms = [
        run(f"random draw {d}", random.Random(d).sample(train, n)) for d in range(args.draws)
    ]
    random_gain = median([r["gain"] for r in randoms])
    reached = None
    for k in (1, 2, 3, 5):
        result = run(f"first {k} suggested", [by_name[name] for name in ranked[:k]])
        gain[f"suggested_{k}"] = result
        if reached is None and result["gain"] >= random_gain:
            reached = k
    figures = {
        "scale": scale,
        "zero_shot": {"recall": zero.recall, "precision": zero.precision},
        "suggest_seconds": {"100": seconds_100, str(len(train)): seconds_all},
        "random": randoms,
        "random_median_gain": random_gain,
        "suggested_fields_reaching_random_gain": reached,
        **gain,
    }
    ratio = gain["suggested"]["gain"] / random_gain if random_gain > 0 else float("inf")
    print(
        f"\nmedian gain of {n} random fields (of {len(randoms)} draws): {random_gain:+.3f}; "
        f"{n} suggested: {gain['suggested']['gain']:+.3f} ({ratio:.2f} x); by name: "
        f"{gain['by_name']['gain']:+.3f}; the random gain reached with {reached} suggested fields"
    )
    write_json(figures, args.json)


if __name__ == "__main__":
    main()
