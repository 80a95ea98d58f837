"""The fixed-noise stage III evaluation (``bench/stage3_eval.py``) on saved tiny models and a tiny data directory:
the identity row's r_photo is the reward computed directly; one artist under two names gives identical rows, another
artist other rows; std and best-of-seeds are those of the per-seed rewards; seed k's edit does not depend on how many
seeds run; r_PA is r_comp · r_photo with the critic's suggestions; bad input is refused with its fix."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from spc_fast import imagefiles, retouch
from spc_fast.bench import stage3_eval
from spc_fast.bench.stage3_eval import edit_rewards, evaluate, main, parse_artists
from spc_fast.critic import model as critic_model
from spc_fast.critic.vocabulary import EXPOSURE, CriticOutput, Suggestion
from spc_fast.images import output_size, resize_bicubic, to_unit_float
from spc_fast.kernels import dispatch
from spc_fast.models import qwen_image, qwen_vl, tiny_artist, tiny_critic
from spc_fast.rewards.artist import photometric_control_reward, suggestion_tensor
from spc_fast.training.data.manifest import Record, load_image, write_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def torch_ops_one_thread():
    """For the module-scoped fixtures too (``one_thread`` and ``torch_path`` are per test): the attributes on their
    torch path (the Triton interpreter would only make this slow), and one thread, so that every evaluation here
    sums in the same order and seed 0's edits compare exactly across runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(dispatch.SETTING_ENV, "torch")
        yield
    torch.set_num_threads(threads)


PIXELS = 64 * 64
SIZES = {"a": (64, 64), "b": (64, 64), "c": (48, 96)}  # (height, width): two working sizes


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three pairs (target = input +0.35 EV) in two working sizes, and one score-only record that is left out."""
    out = tmp_path_factory.mktemp("data")
    records = []
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        g = torch.Generator().manual_seed(i)
        coarse = torch.rand(1, 3, 4, 4, generator=g) * 0.6 + 0.2
        image = (torch.nn.functional.interpolate(coarse, (h, w), mode="bilinear")[0] * 255).round().to(torch.uint8)
        imagefiles.save_image(out / f"{name}.png", image)
        imagefiles.save_image(out / f"{name}_gt.png", retouch.apply(image, exposure=0.35))
        records.append(
            Record(id=name, task="retouch", input=out / f"{name}.png", target=out / f"{name}_gt.png", width=w, height=h)
        )
    records.append(Record(id="score-only", task="score", input=out / "a.png", width=64, height=64))
    write_manifest(out, records)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The tiny critic and two tiny artists (seeds 0 and 1) saved in the layouts ``load_critic``/``load_artist``
    read."""
    root = tmp_path_factory.mktemp("models")
    critic = tiny_critic(0)
    qwen_vl.save_critic(critic.model, critic.processor, root / "critic")
    qwen_vl.write_prompt(root / "critic", critic.config.system_prompt, critic.config.instruction)
    for seed in (0, 1):
        artist = tiny_artist(seed)
        qwen_image.save_artist(root / f"artist{seed}", artist.transformer, artist.vae, artist.scheduler)
    return {"critic": root / "critic", "artist0": root / "artist0", "artist1": root / "artist1"}


@pytest.fixture(scope="module")
def rows(data, models) -> dict[str, stage3_eval.MethodRow]:
    artists = {"first": models["artist0"], "again": models["artist0"], "other": models["artist1"]}
    return evaluate(data, models["critic"], artists, strength=0.3, pixels=PIXELS, seeds=3)


def _unit(path: Path, size: tuple[int, int]) -> torch.Tensor:
    return to_unit_float(torch.from_numpy(resize_bicubic(load_image(path).permute(1, 2, 0).numpy(), size)))


def test_rows_in_order_without_score_only_records(rows):
    assert list(rows) == ["identity", "vae round trip", "first", "again", "other"]
    for row in rows.values():  # the 48x96 record is its own working size, (48, 96), sorted before (64, 64)
        assert row.n == 3 and row.ids == ("c", "a", "b")


def test_identity_r_photo_is_the_reward_computed_directly(rows, data):
    identity = rows["identity"]
    direct = []
    for record_id in identity.ids:
        size = output_size(*SIZES[record_id], PIXELS)
        x = _unit(data / f"{record_id}.png", size).permute(2, 0, 1)[None]
        gt = _unit(data / f"{record_id}_gt.png", size).permute(2, 0, 1)[None]
        direct.append(float(photometric_control_reward(x, x, gt)[0]))
    assert identity.r_photo_by_seed == (tuple(direct),)
    assert identity.r_photo == pytest.approx(statistics.fmean(direct))
    assert identity.std_photo == identity.std_pa == 0.0


def test_one_artist_under_two_names_gives_identical_rows(rows):
    first, again, other = rows["first"], rows["again"], rows["other"]
    assert dataclasses.replace(again, method="first") == first
    assert first.r_photo_by_seed != other.r_photo_by_seed  # another DiT: the rows are not identical by construction
    assert first.r_photo_by_seed[0] != first.r_photo_by_seed[1]  # and the seeds draw different noise


def test_std_and_best_are_those_of_the_per_seed_rewards(rows):
    for name in ("first", "other"):
        row = rows[name]
        for by_seed, std, best, mean in (
            (row.r_pa_by_seed, row.std_pa, row.best_pa, row.r_pa),
            (row.r_photo_by_seed, row.std_photo, row.best_photo, row.r_photo),
        ):
            assert len(by_seed) == 3 and all(len(s) == 3 for s in by_seed)
            per_record = list(zip(*by_seed, strict=True))
            assert std == pytest.approx(statistics.fmean(statistics.stdev(r) for r in per_record), abs=1e-6)
            assert best == pytest.approx(statistics.fmean(max(r) for r in per_record), abs=1e-6)
            assert mean == pytest.approx(statistics.fmean(v for s in by_seed for v in s), abs=1e-6)
        for pa, photo in zip(row.r_pa_by_seed, row.r_photo_by_seed, strict=True):
            assert all(a <= b + 1e-6 for a, b in zip(pa, photo, strict=True))  # r_comp <= 1
    for name in ("identity", "vae round trip"):
        assert len(rows[name].r_pa_by_seed) == 1 and rows[name].best_photo == pytest.approx(rows[name].r_photo)


def test_one_seed_gives_seed_zeros_edits_and_no_spread(rows, data, models):
    one = evaluate(data, models["critic"], {"first": models["artist0"]}, strength=0.3, pixels=PIXELS, seeds=1)
    row = one["first"]
    assert row.std_pa == row.std_photo == 0.0  # not NaN: one draw has no spread
    assert row.r_pa_by_seed == rows["first"].r_pa_by_seed[:1]  # seed 0's noise, whatever the number of seeds
    assert row.r_photo_by_seed == rows["first"].r_photo_by_seed[:1]
    assert row.best_photo == pytest.approx(row.r_photo)
    assert one["vae round trip"] == rows["vae round trip"]


def test_r_pa_is_compliance_times_r_photo():
    x = torch.full((1, 3, 32, 32), 0.4)
    brighter = retouch.apply(x, exposure=0.5)
    r_photo = photometric_control_reward(x, brighter, brighter)
    for direction, r_comp in ((1, 1.0), (-1, 0.0)):
        counts = suggestion_tensor([[Suggestion(EXPOSURE, direction)]])
        r_pa, photo = edit_rewards(x, brighter, brighter, counts)
        assert photo == pytest.approx(r_photo) and r_pa == pytest.approx(r_comp * r_photo)
    r_pa, _ = edit_rewards(x, brighter, brighter, suggestion_tensor([[]]))
    assert r_pa == pytest.approx(r_photo)  # no tone suggestion: r_comp = 1


def test_r_pa_follows_the_critics_suggestions(monkeypatch, rows, data, models):
    """Every answer parsed as "increase exposure": the input unchanged does not comply, an edit complies or not."""
    answer = CriticOutput("Dark.", [Suggestion(EXPOSURE, 1)], 40.0)
    monkeypatch.setattr(critic_model, "parse", lambda text: answer)
    got = evaluate(data, models["critic"], {"first": models["artist0"]}, strength=0.3, pixels=PIXELS, seeds=1)
    assert got["identity"].r_photo_by_seed == rows["identity"].r_photo_by_seed
    assert got["identity"].r_pa == 0.0
    (pa,), (photo,) = got["first"].r_pa_by_seed, got["first"].r_photo_by_seed
    assert photo == rows["first"].r_photo_by_seed[0]  # the same H_c: parsing does not touch the hidden states
    assert all(a in (0.0, pytest.approx(b)) for a, b in zip(pa, photo, strict=True))
    assert 0.0 in pa and max(pa) > 0  # these seeds and records have both cases


@pytest.mark.parametrize("value", ["trained", "=runs/final", "trained="])
def test_malformed_artist_value_is_refused(value, capsys, tmp_path):
    with pytest.raises(ValueError, match="expected NAME=DIR"):
        parse_artists([value])
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path), "--critic", "tiny", "--artist", value])
    assert "expected NAME=DIR" in capsys.readouterr().err


def test_bad_input_names_the_problem_and_the_fix(tmp_path, data, capsys):
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--critic", str(tmp_path / "gone"), "--artist", "a=tiny"])
    assert "critic directory" in capsys.readouterr().err
    with pytest.raises(ValueError, match="artist 'a' directory .* does not exist.*RUN/final"):
        evaluate(data, "tiny", parse_artists([f"a={tmp_path / 'gone'}"]))
    with pytest.raises(ValueError, match="given twice"):
        parse_artists(["a=tiny", "a=tiny"])
    with pytest.raises(ValueError, match="baseline"):
        evaluate(data, "tiny", {"identity": "tiny"})
    with pytest.raises(ValueError, match="no artist"):
        evaluate(data, "tiny", {})
    with pytest.raises(ValueError, match="spc-fast data build"):
        evaluate(tmp_path / "nowhere", "tiny", {"a": "tiny"})
    scores = [Record(id="s", task="score", input=data / "a.png", width=64, height=64)]
    write_manifest(tmp_path / "scores", scores)
    with pytest.raises(ValueError, match="none of its 1 records has a target.*spc-fast data build"):
        evaluate(tmp_path / "scores", "tiny", {"a": "tiny"})


def test_command_line_prints_the_table_and_writes_json(data, tmp_path, capsys):
    out = tmp_path / "eval.json"
    argv = ["--data", str(data), "--critic", "tiny", "--artist", "tiny=tiny", "--seeds", "2", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| method | r_PA | r_photo |" in printed
    for method in ("identity", "vae round trip", "tiny"):
        assert f"| {method} |" in printed
    payload = json.loads(out.read_text())
    assert payload["config"]["strength"] == 1.0
    assert [r["method"] for r in payload["rows"]] == ["identity", "vae round trip", "tiny"]
    assert np.shape(payload["rows"][2]["r_pa_by_seed"]) == (2, 3)
