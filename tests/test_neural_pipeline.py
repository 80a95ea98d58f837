"""The neural critic and artist in the enhancer, end to end on tiny random-weight models saved in the release
layout: ``spc-fast enhance --critic DIR --artist DIR`` and ``spc-fast critique --critic DIR``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from cli_runs import run_cli as _run  # noqa: E402

from spc_fast import attention, cli, imagefiles  # noqa: E402
from spc_fast.artist.lora import add_lora  # noqa: E402
from spc_fast.artists import DiffusionArtist, full_res_method, image_seed  # noqa: E402
from spc_fast.config import PRESETS, TINY, ArtistConfig  # noqa: E402
from spc_fast.models import qwen_image, qwen_vl, tiny_artist, tiny_critic  # noqa: E402
from spc_fast.models.factory import tiny_critic_corpus  # noqa: E402
from spc_fast.pipeline import Pipeline  # noqa: E402
from spc_fast.roles import Judgement  # noqa: E402

PIXELS = 48 * 64  # generation size of the tiny artist (the release generates at ~1 MP)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny critic in the release layout, a tiny diffusers artist directory with a release dit_lora/."""
    root = tmp_path_factory.mktemp("models")
    model, processor = qwen_vl.build_tiny_critic(seed=1, corpus=tiny_critic_corpus())
    qwen_vl.save_critic(model, processor, root / "critic")
    transformer, vae, scheduler = qwen_image.tiny_artist_components(seed=2)
    qwen_image.save_artist(root / "artist", transformer, vae, scheduler)
    add_lora(transformer)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a trained-looking adapter, so merging it changes the output
    qwen_image.save_lora(transformer, root / "artist" / "dit_lora")
    return root


@pytest.fixture
def photo(tmp_path, photos):
    path = tmp_path / "chelsea.jpg"
    imagefiles.save_image(path, torch.from_numpy(photos["chelsea"][:90, :120]).permute(2, 0, 1).contiguous())
    return path



def test_enhance_with_neural_critic_and_artist(models, photo, tmp_path, capsys):
    out, report = tmp_path / "out.jpg", tmp_path / "report.json"
    code, stdout, err = _run(
        capsys, "enhance", photo, "-o", out, "--critic", models / "critic", "--artist", models / "artist",
        "--steps", 2, "--pixels", PIXELS, "--max-new-tokens", 12, "--attention", "sdpa", "--report", report,
    )
    assert code == 0, err
    assert imagefiles.load_tensor(out).shape == imagefiles.load_tensor(photo).shape == (3, 90, 120)
    data = json.loads(report.read_text())
    assert data["critic"] == "ImageCritic" and data["artist"] == "DiffusionArtist"
    assert data["critic_attention"] == data["artist_attention"] == "sdpa"
    record = data["images"][0]
    critique = record["critique"]
    assert set(critique) == {"reasoning", "suggestions", "score", "errors"}
    # random weights answer nonsense: the parser reports what is missing instead of failing
    assert critique["errors"] and record["rewards"]["format"] == 0.0
    assert "score ?;" in stdout  # no parseable score, and no re-scoring unless --rescore
    assert record["truncated"] == ("cut off" in err)
    assert record["full_res"] in ("transfer", "resize")  # generated at 48 x 64, carried over to 90 x 120


def test_critique_with_neural_critic(models, photo, capsys):
    code, stdout, err = _run(
        capsys, "critique", photo, "--critic", models / "critic", "--max-new-tokens", 6, "--device", "cpu"
    )
    assert code == 0 and stdout.strip()
    assert "critic answer: tags: missing <think>" in err


def test_model_flag_errors(models, photo, tmp_path, capsys):
    code, _, err = _run(capsys, "enhance", photo, "-o", tmp_path / "o.jpg", "--artist", models / "artist")
    assert code == 1 and "--artist needs --critic" in err
    code, _, err = _run(capsys, "enhance", photo, "-o", tmp_path / "o.jpg", "--set", "artist.weights=tiny")
    assert code == 1 and "set critic.weights too" in err
    code, _, err = _run(capsys, "enhance", photo, "-o", tmp_path / "o.jpg", "--steps", 4, "--seed", 3)
    assert code == 1 and "--steps, --seed configure the neural artist" in err
    code, _, err = _run(capsys, "critique", photo, "--attention", "flash")
    assert code == 1 and "--attention configure the neural critic" in err
    with pytest.raises(SystemExit):
        cli.main(["enhance", str(photo), "-o", str(tmp_path / "o.jpg"), "--pixels", "0"])
    assert "must be at least 256" in capsys.readouterr().err
    assert cli.ATTENTION_BACKENDS == attention.BACKENDS
    (tmp_path / "broken" / "vlm").mkdir(parents=True)
    code, _, err = _run(capsys, "critique", photo, "--critic", tmp_path / "broken")
    assert code == 1 and "vlm/config.json" in err and "vlm/tokenizer.json" in err
    assert not (tmp_path / "o.jpg").exists()


def test_pipeline_mixed_sizes_and_seeds():
    critic, artist = tiny_critic(config=dataclasses.replace(PRESETS[TINY].critic, max_new_tokens=6)), tiny_artist()
    g = torch.Generator().manual_seed(5)
    images = [torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8), torch.rand(3, 32, 32, generator=g),
              torch.rand(3, 32, 32, generator=g)]  # the two 32 x 32 ones share a sampler batch
    config = ArtistConfig(steps=2, pixels=PIXELS)
    pipeline = Pipeline(critic, DiffusionArtist(artist, config))
    result = pipeline.enhance(images)
    assert [(i.shape, i.dtype) for i in result.images] == [(x.shape, x.dtype) for x in images]
    assert len(result.records) == 3
    assert [r.full_res for r in result.records] == [full_res_method(r.critique, "transfer") for r in result.records]
    assert Pipeline(critic).enhance(images[:1]).records[0].full_res == "none"  # the rule artist edits in place
    # an image's edit does not depend on its batch: alone, it comes out the same
    alone = pipeline.enhance(images[2:]).images[0]
    torch.testing.assert_close(alone, result.images[2], atol=1e-4, rtol=0)
    reseeded = Pipeline(critic, DiffusionArtist(artist, dataclasses.replace(config, seed=1)))
    assert not torch.equal(reseeded.enhance(images[2:]).images[0], alone)
    assert image_seed(images[0], 0) != image_seed(images[0], 1) != image_seed(images[1], 1)
    with pytest.raises(ValueError, match="hidden states"):
        DiffusionArtist(artist).edit(images, Judgement(["x"] * 3, [r.critique for r in result.records]))


def test_load_artist_merges_the_release_lora(models):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from spc_fast.models import load_artist

    artist = load_artist(models / "artist", ArtistConfig(device="cpu"))
    layers = [m for m in artist.transformer.modules() if isinstance(m, BaseTunerLayer)]
    assert len(layers) == 2 * len(qwen_image.LORA_TARGETS) and all(layer.merged for layer in layers)
    assert artist.transformer.dtype == torch.float32 and artist.attention == "sdpa"


def test_release_critic_without_a_prompt_file_says_how_to_pass_one(models, caplog):
    from spc_fast import notices
    from spc_fast.config import CriticConfig
    from spc_fast.models import load_critic

    notices.forget()
    with caplog.at_level("WARNING", logger="spc_fast.models.factory"):
        load_critic(models / "critic", CriticConfig(device="cpu", max_new_tokens=4))
        load_critic(models / "critic", CriticConfig(device="cpu", max_new_tokens=4, instruction="Judge it."))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "--critic-prompt FILE" in said[0]
