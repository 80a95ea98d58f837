"""``spc-fast evaluate`` (spc_fast/evaluate/): metric values equal the libraries' own, pairing and its errors,
--skip-bad counting, the JSON and CSV layouts, the FiveK preset's resize, and missing weights named."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from spc_fast.evaluate import METRICS, build_scorers, pair_folders, read_image
from spc_fast.evaluate.cli import main
from spc_fast.evaluate.metrics import lpips_scorer
from spc_fast.evaluate.pairs import batches, short_side_size
from spc_fast.rewards import load_lpips
from spc_fast.rewards.perceptual import BACKBONE_ENV

CPU = torch.device("cpu")


def _photo(seed: int, height: int = 40, width: int = 52) -> np.ndarray:
    """A smooth colour photo-like image (gradients plus blobs), uint8 H x W x 3."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(rng.uniform(2, 6) * x + rng.uniform(0, 3)) * np.cos(rng.uniform(2, 6) * y) for _ in range(3)]
    image = 0.5 + 0.4 * np.stack(channels, -1) + rng.normal(0, 0.05, (height, width, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _noisy(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).round().astype(np.uint8)


def _skimage(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {
        "psnr": peak_signal_noise_ratio(ref, pred, data_range=255),
        "ssim": structural_similarity(ref, pred, channel_axis=-1, data_range=255),
        "deltae": float(deltaE_ciede2000(rgb2lab(pred), rgb2lab(ref)).mean()),
    }


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def _save(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name)
    return folder / name


@pytest.fixture(scope="module")
def scorers():
    return build_scorers([METRICS[n] for n in ("psnr", "ssim", "deltae")], CPU, Path("unused"))


@pytest.mark.parametrize("size", [(40, 52), (7, 9), (33, 21)])
def test_psnr_ssim_deltae_equal_scikit_image_batched(scorers, size):
    # one batch of four pairs from mild to heavy noise; each value against scikit-image's on that pair alone
    refs = [_photo(i, *size) for i in range(4)]
    preds = [_noisy(r, sigma, i) for i, (r, sigma) in enumerate(zip(refs, (2, 10, 40, 90), strict=True))]
    pred, ref = _tensor(preds), _tensor(refs)
    for name, scorer in scorers.items():
        ours = scorer(pred, ref).double()
        theirs = torch.tensor([_skimage(p, r)[name] for p, r in zip(preds, refs, strict=True)], dtype=torch.float64)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=0, msg=f"{name} differs from scikit-image's")


def test_identical_images_give_scikit_images_extremes(scorers):
    image = _tensor([_photo(5)])
    assert scorers["psnr"](image, image).item() == float("inf")
    assert scorers["ssim"](image, image).item() == pytest.approx(1.0, abs=1e-6)
    assert scorers["deltae"](image, image).item() == 0.0


def test_lpips_equals_the_lpips_package():
    model = load_lpips(random_backbone=True)
    refs = [_photo(i, 48, 64) for i in range(3)]
    preds = [_noisy(r, 20, i) for i, r in enumerate(refs)]
    ours = lpips_scorer(model)(_tensor(preds), _tensor(refs))
    with torch.no_grad():  # the package's own [0, 1] input path
        theirs = model(_tensor(preds) / 255, _tensor(refs) / 255, normalize=True).reshape(-1)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def _folders(tmp_path: Path, count: int = 3, sigma: float = 12.0) -> tuple[Path, Path, list[dict[str, float]]]:
    pred, ref, expected = tmp_path / "pred", tmp_path / "ref", []
    for i in range(count):
        clean = _photo(i)
        noisy = _noisy(clean, sigma, i)
        _save(ref, f"img{i}.png", clean)
        _save(pred, f"img{i}.png" if i % 2 == 0 else f"img{i}.tif", noisy)  # pairs by name, any extension
        expected.append(_skimage(noisy, clean))
    return pred, ref, expected


def test_check_command_writes_the_means(tmp_path, capsys):
    pred, ref, expected = _folders(tmp_path)
    out = tmp_path / "result.json"
    status = main(["--pred", str(pred), "--ref", str(ref), "--metrics", "psnr,ssim,deltae", "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    for name in ("psnr", "ssim", "deltae"):
        values = [e[name] for e in expected]
        stats = report["metrics"][name]
        assert stats["mean"] == pytest.approx(np.mean(values), rel=1e-4)
        assert stats["median"] == pytest.approx(np.median(values), rel=1e-4)
        assert stats["count"] == 3
    assert report["images"] == 3 and report["skipped"] == []
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:4] == ["metric", "mean", "median", "count"]
    assert f"{report['metrics']['psnr']['mean']:.4f}" in table


def test_per_image_csv(tmp_path):
    pred, ref, expected = _folders(tmp_path, count=2)
    table = tmp_path / "out" / "per_image.csv"
    assert main(["--pred", str(pred), "--ref", str(ref), "--per-image", str(table), "--batch-size", "1"]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [r["name"] for r in rows] == ["img0", "img1"]
    assert rows[1]["pred"] == str(pred / "img1.tif")
    for row, want in zip(rows, expected, strict=True):
        for name in ("psnr", "ssim", "deltae"):
            assert float(row[name]) == pytest.approx(want[name], rel=1e-4)


def test_missing_partner_is_an_error_naming_the_file(tmp_path, capsys):
    pred, ref, _ = _folders(tmp_path)
    (ref / "img1.png").unlink()
    _save(ref, "only_ref.png", _photo(9))
    assert main(["--pred", str(pred), "--ref", str(ref)]) == 1
    err = capsys.readouterr().err
    assert f"{pred / 'img1.tif'}: no reference named img1.* in {ref}" in err
    assert f"{ref / 'only_ref.png'}: no prediction named only_ref.* in {pred}" in err
    assert "--skip-bad" in err


def test_skip_bad_counts_what_it_leaves_out(tmp_path, capsys):
    pred, ref, expected = _folders(tmp_path, count=5)
    (ref / "img1.png").unlink()  # no reference
    _save(pred, "img2.png", _photo(2, 30, 30))  # size mismatch (replaces the prediction)
    (pred / "img3.png").write_bytes(b"not an image")  # undecodable
    (pred / "img3.tif").unlink()
    out = tmp_path / "r.json"
    assert main(["--pred", str(pred), "--ref", str(ref), "--skip-bad", "--json", str(out), "--batch-size", "2"]) == 0
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["metrics"]["psnr"]["count"] == 2
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"img1.tif", "img2.png", "img3.png"}
    assert "30x30 pixels but its reference" in skipped["img2.png"]
    assert report["metrics"]["psnr"]["mean"] == pytest.approx((expected[0]["psnr"] + expected[4]["psnr"]) / 2)
    assert "skipped 3 pair(s), scored 2" in capsys.readouterr().err


def test_size_mismatch_without_skip_bad_stops(tmp_path, capsys):
    pred, ref, _ = _folders(tmp_path, count=2)
    _save(pred, "img0.png", _photo(0, 41, 52))
    assert main(["--pred", str(pred), "--ref", str(ref)]) == 1
    assert (
        f"{pred / 'img0.png'}: 52x41 pixels but its reference {ref / 'img0.png'} has 52x40" in capsys.readouterr().err
    )


def test_two_files_of_one_name_are_refused(tmp_path):
    pred, ref, _ = _folders(tmp_path, count=1)
    _save(pred, "img0.jpg", _photo(0))
    with pytest.raises(ValueError, match="same name"):
        pair_folders(pred, ref, None)


def test_mixed_sizes_stream_in_bounded_batches(tmp_path):
    pred, ref = tmp_path / "p", tmp_path / "r"
    for i, size in enumerate([(20, 24), (30, 18), (20, 24), (25, 25), (30, 18)]):
        image = _photo(i, *size)
        _save(pred, f"{i}.png", _noisy(image, 5, i))
        _save(ref, f"{i}.png", image)
    pairs, problems = pair_folders(pred, ref, None)
    assert problems == [] and len(pairs) == 5
    sizes = [len(batch) for batch in batches(pairs, 2)]
    assert sizes == [2, 2, 1]
    out = tmp_path / "r.json"
    assert main(["--pred", str(pred), "--ref", str(ref), "--json", str(out), "--batch-size", "3"]) == 0
    assert json.loads(out.read_text())["metrics"]["ssim"]["count"] == 5


def test_fivek_preset_resizes_both_to_a_480_pixel_short_side(tmp_path):
    assert short_side_size(1000, 1500, 480) == (480, 720)
    assert short_side_size(1333, 1000, 480) == (640, 480)
    image = _photo(3, 500, 620)
    path = _save(tmp_path / "a", "x.png", image)
    resized = read_image(path, 480)
    expected = np.array(Image.fromarray(image).resize((595, 480), Image.Resampling.BICUBIC))
    assert torch.equal(resized, torch.from_numpy(expected).permute(2, 0, 1).float())
    _save(tmp_path / "b", "x.png", image)
    out = tmp_path / "r.json"
    argv = ["--pred", str(tmp_path / "a"), "--ref", str(tmp_path / "b"), "--preset", "fivek", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["short_side"] == 480 and report["metrics"]["psnr"]["mean"] == float("inf")


def test_missing_weights_name_the_file_and_its_source(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(BACKBONE_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as error:
        build_scorers([METRICS["dists"]], CPU, tmp_path)
    message = str(error.value)
    assert str(tmp_path / "DISTS_weights-f5e65c96.pth") in message and "chaofengc/IQA-PyTorch-Weights" in message
    assert str(tmp_path / "vgg16-397923af.pth") in message and "download.pytorch.org/models" in message
    pred, ref, _ = _folders(tmp_path, count=1)
    status = main(["--pred", str(pred), "--ref", str(ref), "--metrics", "psnr,lpips", "--weights", str(tmp_path)])
    assert status == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'alexnet-owt-7be5be79.pth'}" in err and "never downloads" in err


def test_metric_and_folder_errors(tmp_path, capsys):
    pred, ref, _ = _folders(tmp_path, count=1)
    assert main(["--pred", str(pred), "--ref", str(ref), "--metrics", "psnr,sharpness"]) == 1
    assert "unknown metric 'sharpness'" in capsys.readouterr().err
    assert main(["--pred", str(pred), "--ref", str(ref), "--metrics", "dino"]) == 1
    assert "pass --input DIR" in capsys.readouterr().err
    assert main(["--pred", str(pred)]) == 1
    assert "pass --ref DIR" in capsys.readouterr().err


def test_a_missing_library_is_named_with_its_install_command(tmp_path, monkeypatch):
    (tmp_path / "musiq_koniq_ckpt-e95806b9.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # as if pyiqa were not installed
    with pytest.raises(ValueError, match="metric 'musiq' needs a Python package .*; pip install pyiqa"):
        build_scorers([METRICS["musiq"]], CPU, tmp_path)
