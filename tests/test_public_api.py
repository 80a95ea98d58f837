"""Every public name that SPEC.md, the README and the issues promise is importable and callable."""

import importlib

import pytest

PUBLIC = {
    "spc_fast.colour": ["srgb_to_linear", "linear_to_srgb", "srgb_to_lab", "lab_to_srgb", "mccamy_cct",
                        "daylight_xy", "temperature_matrix"],
    "spc_fast.photometric": ["attributes_reference", "attributes", "ATTRIBUTE_NAMES", "finalize",
                             "block_stats_torch", "mean_lightness"],
    "spc_fast.retouch": ["apply", "apply_reference", "exposure_reference", "contrast_reference",
                         "saturation_reference", "temperature_reference"],
    "spc_fast.degrade": ["gaussian_blur", "motion_blur", "haze", "gaussian_noise", "poisson_noise", "low_light",
                         "jpeg", "DEGRADATIONS"],
    "spc_fast.imagefiles": ["load_image", "load_tensor", "save_image", "read_metadata"],
    "spc_fast.critic.format": ["parse", "render", "CriticOutput", "Suggestion", "parse_suggestions",
                               "suggestion_phrase"],
    "spc_fast.critic.vocabulary": ["TONE_OPS", "RESTORATION_OPS", "OPS", "MAGNITUDES", "TAGS", "NO_EDIT",
                                   "CriticOutput", "Suggestion"],
    "spc_fast.critic.analytic": ["AnalyticCritic", "Analysis"],
    "spc_fast.critic.model": ["ImageCritic"],
    "spc_fast.critic.policy": ["CriticRollout"],
    "spc_fast.executor": ["retouch_parameters", "STEPS", "NEUTRAL_PARAMETERS"],
    "spc_fast.config": ["CriticConfig", "ArtistConfig", "PipelineConfig", "PRESETS", "resolve", "override",
                        "load_toml", "from_dict", "to_dict", "layered"],
    "spc_fast.roles": ["Judgement", "Critic", "Artist"],
    "spc_fast.artists": ["RuleArtist", "DiffusionArtist", "image_seed"],
    "spc_fast.pipeline": ["Pipeline", "EnhanceRecord", "EnhanceResult"],
    "spc_fast.instruct": ["InstructionCritic", "parse_instruction", "known_operations"],
    "spc_fast.models": ["load_critic", "load_artist", "tiny_critic", "tiny_artist", "build_critic", "build_artist"],
    "spc_fast.artist": ["PhotoArtist", "EditResult", "Trajectory", "add_lora", "merge_lora", "upsample_edit",
                        "output_size", "schedule", "use_release_mlp"],
    "spc_fast.images": ["output_size", "edit_image_size", "edit_image"],
    "spc_fast.adapters": ["adapters_disabled", "adapter_active"],
    "spc_fast.rl_losses": ["nft_loss", "grpo_loss", "token_logprobs", "group_advantages",
                           "optimality_from_advantage"],
    "spc_fast.rewards": ["compliance_reward", "photometric_control_reward", "perceptual_reward", "artist_reward",
                         "format_reward", "rank_reward", "suggestion_reward", "restoration_constraint_reward",
                         "load_lpips", "suggestion_tensor"],
    "spc_fast.kernels.dispatch": ["use_triton", "backend_name", "torch_fallback", "setting", "unusable_reason",
                                  "launches"],
    "spc_fast.kernels": ["nft_loss", "grpo_loss", "grpo_loss_from_logits", "token_logprobs", "group_advantages",
                         "optimality_from_advantage", "nft_loss_reference", "grpo_loss_reference"],
    "spc_fast.kernels.photometric_stats": ["photometric_stats"],
    "spc_fast.kernels.retouch_chain": ["retouch_chain"],
    "spc_fast.kernels.bilateral_slice": ["bilateral_slice"],
    "spc_fast.cli": ["main"],
    "spc_fast.bench.runner": ["main"],
    "spc_fast.training.config": ["TrainConfig", "OptimConfig", "ParallelConfig", "preset", "train_config"],
    "spc_fast.training.trainer": ["Trainer", "RunSummary"],
    "spc_fast.training.cli": ["main"],
    "spc_fast.training.flow": ["sample_generator", "draw_flow", "noisy_latents", "flow_matching_loss",
                               "shifted_timesteps", "FlowDraws"],
    "spc_fast.training.stages": ["STAGES", "CriticSFT", "ArtistSFT", "Adapt"],
    "spc_fast.training.stage": ["Stage", "StepLoss", "stack_samples"],
    "spc_fast.evaluate": ["METRICS", "evaluate_pairs", "pair_folders", "build_scorers", "read_image"],
    "spc_fast.evaluate.cli": ["main"],
    "spc_fast.export": ["ArtistStep", "Engine", "EngineDenoiser", "ExportRanges", "load_engine"],
    "spc_fast.export.cli": ["main"],
    "spc_fast.serve.server": ["main"],
    "spc_fast.demo": ["main", "perturbation", "bundled_photo", "side_by_side"],
    "spc_fast.report_html": ["render", "write_report"],
    "spc_fast.thumbnails": ["thumbnail_jpeg", "data_uri"],
    "spc_fast.bench.plots": ["plot_run", "main"],
    "spc_fast.training.plot": ["plot_run", "read_metrics", "main"],
    "spc_fast.training.joint": ["JointStage", "JointTrainer"],
    "spc_fast.training.joint_config": ["JointConfig", "RLConfig", "joint_config", "read_joint_config"],
    "spc_fast.training.rewards_joint": ["Rewards", "joint_rewards", "advantages", "kept_groups"],
    "spc_fast.training.data.manifest": ["Record", "read_manifest", "write_manifest", "load_image", "Problem",
                                        "ManifestError"],
    "spc_fast.training.data.loader": ["BucketBatches", "Loader"],
    "spc_fast.training.data.build": ["build"],
    "spc_fast.training.data.importers": ["import_pairs", "import_iqa", "merge_annotations"],
    "spc_fast.training.data.annotate": ["annotate", "annotate_record", "critic_answer", "rescale_mos"],
    "spc_fast.training.data.cli": ["main"],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_exist(module_name):
    module = importlib.import_module(module_name)
    missing = [name for name in PUBLIC[module_name] if not hasattr(module, name)]
    assert not missing, f"{module_name} lacks {missing}"


def test_ops_are_registered_with_torch_library():
    import torch

    importlib.import_module("spc_fast.kernels.photometric_stats")
    importlib.import_module("spc_fast.kernels.retouch_chain")
    importlib.import_module("spc_fast.kernels.bilateral_slice")
    assert hasattr(torch.ops.spc_fast, "photometric_stats")
    assert hasattr(torch.ops.spc_fast, "retouch_chain")
    assert hasattr(torch.ops.spc_fast, "bilateral_slice")


def test_every_package_folder_is_in_the_distribution():
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    folders = set()
    for package, folder in config["package-dir"].items():  # spc_fast.kernels <- kernels/, and so on
        folders |= {".".join((package, *p.parent.relative_to(root / folder).parts))
                    for p in (root / folder).rglob("__init__.py")}
    assert folders == declared, f"pyproject.toml packages {sorted(declared)} != folders {sorted(folders)}"
