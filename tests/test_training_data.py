"""Training data: the synthesised build (reproducible for any worker count, suggestions that undo the edit,
annotations that parse and carry them), the manifest's validation of bad data, and the importers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spc_fast import imagefiles, retouch
from spc_fast.critic.format import parse, parse_suggestions
from spc_fast.critic.rules import PRESETS
from spc_fast.images import resize_bicubic
from spc_fast.training.data import build as build_module
from spc_fast.training.data import synthesis
from spc_fast.training.data.annotate import annotate_record, rescale_mos
from spc_fast.training.data.cli import main
from spc_fast.training.data.importers import import_iqa, import_pairs, merge_annotations
from spc_fast.training.data.manifest import (
    ManifestError,
    Record,
    load_image,
    read_manifest,
    record_to_json,
    write_manifest,
)

PAIRS = 6  # two of each kind
FAST_CRITIC = PRESETS["fast"]  # the analytic critic's quick search: these tests check the annotations' form


@pytest.fixture(scope="module")
def kernels_on_torch():
    with pytest.MonkeyPatch.context() as patch:  # the torch path: the Triton interpreter would only be slow
        patch.setenv("SPC_FAST_KERNELS", "torch")
        yield


@pytest.fixture(scope="module")
def photo_folder(photos, tmp_path_factory) -> Path:
    """Three of the bundled photos, small and of different shapes, plus a file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    for (name, pixels), size in zip(sorted(photos.items())[:3], [(40, 56), (48, 48), (56, 40)], strict=True):
        imagefiles.save_image(folder / f"{name}.png", resize_bicubic(pixels, size))
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def built(photo_folder, tmp_path_factory, kernels_on_torch) -> Path:
    out = tmp_path_factory.mktemp("built") / "data"
    summary = build_module.build(photo_folder, out, pairs=PAIRS, seed=5, workers=1, max_side=48)
    assert summary.records == PAIRS and summary.kinds == {"retouch": 2, "restore": 2, "stack": 2}
    assert [p.name for p in summary.ignored] == ["notes.txt"] and summary.skipped == []
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_is_reproducible_and_independent_of_the_worker_count(built, photo_folder, tmp_path, kernels_on_torch):
    again = build_module.build(photo_folder, tmp_path / "again", pairs=PAIRS, seed=5, workers=2, max_side=48)
    assert _files(tmp_path / "again") == _files(built)
    assert again.manifest.read_bytes() == (built / "manifest.jsonl").read_bytes()
    other = build_module.build(photo_folder, tmp_path / "other", pairs=PAIRS, seed=6, workers=1, max_side=48)
    assert other.manifest.read_bytes() != again.manifest.read_bytes()
    with pytest.raises(ValueError, match="already exists"):
        build_module.build(photo_folder, tmp_path / "again", pairs=PAIRS, seed=5)


def test_built_records_are_valid_and_annotated_with_their_suggestions(built):
    records, problems = read_manifest(built, decode=True)
    assert problems == [] and len(records) == PAIRS
    for record in records:
        photo = load_image(record.target)
        assert max(photo.shape[1:]) <= 48 and (record.width, record.height) == (photo.shape[2], photo.shape[1])
        assert record.suggestions and all(parse_suggestions(s)[1] == [] for s in record.suggestions)
        answer = parse(record.annotation)
        assert answer.errors == [] and answer.score is not None
        known = [parse_suggestions(s)[0][0] for s in record.suggestions]
        assert sorted(map(str, answer.suggestions)) == sorted(map(str, known))
        kind = record.id.split("-")[0]
        assert bool(record.degradations) == (kind != "retouch") and bool(record.parameters) == (kind != "restore")
        assert record.task == ("retouch" if kind == "retouch" else "restore")


def test_corrective_suggestions_undo_the_synthetic_edit(built, kernels_on_torch):
    records, _ = read_manifest(built)
    for record in (r for r in records if r.task == "retouch"):
        spoiled, target = load_image(record.input), load_image(record.target)
        restored = retouch.apply(spoiled, **synthesis.corrective_parameters(record.suggestions))
        before = synthesis.attribute_distance(spoiled, target)
        assert before > 1.0, "the inverse edit moved the attributes"
        assert synthesis.attribute_distance(restored, target) <= synthesis.RESTORED_FRACTION * before


def _bad_manifest(folder: Path, built: Path) -> Path:
    """A manifest with one good line and one line of every bad kind (line numbers in the returned names)."""
    records, _ = read_manifest(built, check_files=False)
    good = record_to_json(records[0], folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    small = folder / "small.png"
    imagefiles.save_image(small, np.zeros((8, 8, 3), np.uint8))
    lines = [
        good,  # 1
        {**good, "id": "unreadable", "input": "broken.png"},  # 2
        {**good, "id": "mismatch", "target": "small.png"},  # 3
        good,  # 4 duplicate id
        {**good, "id": "missing", "input": "nowhere.png"},  # 5
        {**good, "id": "annotation", "annotation": "<think>x</think>"},  # 6
        {**good, "id": "task", "task": "colourise"},  # 7
        {**good, "id": "phrase", "suggestions": ["make it pop"]},  # 8
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n"  # 9
    (folder / "manifest.jsonl").write_text(text)
    return folder / "manifest.jsonl"


BAD_KINDS = {
    2: "unreadable image",
    3: "size mismatch",
    4: "duplicate id",
    5: "missing file",
    6: "malformed annotation",
    7: "unknown task",
    8: "bad suggestion",
    9: "malformed line",
}


def test_every_kind_of_bad_data_is_reported_with_file_and_line(built, tmp_path, capsys):
    manifest = _bad_manifest(tmp_path, built)
    with pytest.raises(ManifestError, match="8 bad records") as error:
        read_manifest(manifest)
    assert {p.line: p.kind for p in error.value.problems} == BAD_KINDS
    records, problems = read_manifest(manifest, skip_bad=True)
    assert [r.id for r in records] == ["retouch-000000"] and len(problems) == len(BAD_KINDS)
    assert all(str(p).startswith(f"{manifest}:{p.line}: {p.kind}: ") for p in problems)
    assert main(["check", str(tmp_path)]) == 1
    err = capsys.readouterr()
    assert all(f"{manifest}:{line}: {kind}" in err.err for line, kind in BAD_KINDS.items())
    assert "1 good records" in err.out and "8 bad" in err.out


def test_pairs_import_matches_names_and_reports_the_rest(photos, tmp_path, capsys):
    for side in ("input", "target"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
    astronaut = resize_bicubic(photos["astronaut"], (24, 32))
    imagefiles.save_image(tmp_path / "pairs/input/a.png", astronaut)
    imagefiles.save_image(tmp_path / "pairs/target/a.jpg", astronaut)  # matched by name without extension
    imagefiles.save_image(tmp_path / "pairs/input/b.png", astronaut)  # no target
    imagefiles.save_image(tmp_path / "pairs/input/c.png", astronaut)
    imagefiles.save_image(tmp_path / "pairs/target/c.png", astronaut[:16])  # other size
    records, problems = import_pairs(tmp_path / "pairs", task="restore", prefix="set-")
    assert [(r.id, r.task, r.width, r.height, r.suggestions, r.annotation) for r in records] == [
        ("set-a", "restore", 32, 24, (), None)
    ]
    assert {(p.file.name, p.kind) for p in problems} == {("b.png", "missing file"), ("c.png", "size mismatch")}
    out = tmp_path / "data"
    assert main(["import", "pairs", str(tmp_path / "pairs"), "--out", str(out)]) == 1
    assert not (out / "manifest.jsonl").exists()
    assert main(["import", "pairs", str(tmp_path / "pairs"), "--out", str(out), "--skip-bad"]) == 0
    assert "skipped 2 bad inputs" in capsys.readouterr().err
    assert [r.id for r in read_manifest(out)[0]] == ["a"]


def test_iqa_import_detects_columns_rescales_the_mos_and_reports_bad_rows(photos, tmp_path, kernels_on_torch):
    for name in ("chelsea", "coffee"):
        imagefiles.save_image(tmp_path / f"{name}.png", resize_bicubic(photos[name], (24, 32)))
    table = tmp_path / "scores.csv"
    table.write_text("Image_Name,MOS\nchelsea.png,4.5\ncoffee.png,2.0\nmissing.png,3.0\ncoffee.png,1\nx.png,n/a\n")
    records, problems = import_iqa(table, mos_range=(1.0, 5.0), critic=FAST_CRITIC)
    assert [(r.id, r.task, r.mos) for r in records] == [("chelsea.png", "score", 4.5), ("coffee.png", "score", 2.0)]
    assert [parse(r.annotation).score for r in records] == [88.0, 25.0]
    assert all(parse(r.annotation).errors == [] for r in records)
    assert [(p.line, p.kind) for p in problems] == [(4, "missing file"), (5, "duplicate id"), (6, "malformed line")]
    default_range, _ = import_iqa(table, annotate=False)
    assert all(r.annotation is None for r in default_range)
    assert parse(annotate_record(default_range[1], mos_range=(2.0, 4.5), config=FAST_CRITIC)).score == 0.0
    assert rescale_mos(2.0, 2.0, 4.5) == 0.0 and rescale_mos(1.0, 5.0, 1.0) == 100.0
    with pytest.raises(ValueError, match="outside"):
        rescale_mos(6.0, 1.0, 5.0)
    with pytest.raises(ValueError, match="cannot tell which column"):
        table.write_text("picture,value\nchelsea.png,3\n")
        import_iqa(table)


def test_annotations_merge_onto_records_by_id_or_image(built, tmp_path):
    records, _ = read_manifest(built, check_files=False)
    good = records[1].annotation
    lines = [
        {"id": records[0].id, "text": good},
        {"image": str(records[2].input), "annotation": good},
        {"id": records[3].id, "text": "<answer>80</answer>"},
        {"id": "nobody", "text": good},
        {"id": records[0].id, "text": good},
    ]
    file = tmp_path / "teacher.jsonl"
    file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    merged, problems = merge_annotations(records, file)
    assert merged[0].annotation == good and merged[2].annotation == good and merged[3] == records[3]
    assert [(p.line, p.kind) for p in problems] == [
        (3, "malformed annotation"),
        (4, "unknown record"),
        (5, "duplicate id"),
    ]


def test_manifest_round_trips_paths_inside_and_outside_its_folder(tmp_path, built):
    records, _ = read_manifest(built, check_files=False)
    outside = Record(id="outside", input=records[0].input, task="score", width=48, height=48, mos=3.5)
    path = write_manifest(tmp_path / "m" / "manifest.jsonl", [records[0], outside])
    again, _ = read_manifest(path, check_files=False)
    assert again == [records[0], outside]
    assert json.loads(path.read_text().splitlines()[1])["input"] == str(records[0].input)  # absolute outside


def test_cli_builds_and_reports_errors_on_one_line(photo_folder, tmp_path, capsys, kernels_on_torch):
    out = tmp_path / "data"
    args = ["build", "--photos", str(photo_folder), "--out", str(out), "--pairs", "3", "--seed", "1"]
    assert main([*args, "--max-side", "32", "--no-annotate"]) == 0
    assert "3 records" in capsys.readouterr().out
    assert main(["check", str(out)]) == 0
    assert main([*args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spc-fast data: error: ") and "already exists" in err[0]
    assert main(["check", str(tmp_path / "nothing")]) == 1
