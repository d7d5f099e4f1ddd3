"""Training end to end on CPU: synthetic bags -> dataset -> stage 1 -> stage 2 -> inference engine.

Tiny random models (64 px, 4 predicted frames) so every step takes a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import dataclasses

import numpy as np
import pytest
import torch

from vpp_core.data.convert import convert, load_config as load_convert_config
from vpp_core.data.dataset import VPPDataset
from vpp_core.data.synthetic import write_synthetic_bag
from vpp_core.model.engine import PolicyEngine
from vpp_core.training.config import Stage1Config, Stage2Config, load_config
from vpp_core.training.datasets import ClipDataset, ObservationDataset
from vpp_core.training.stage1 import (
    LatentTable,
    Stage1Module,
    build_initial_tvp,
    latent_std,
    train_stage1,
    vae_latents,
    video_loss,
)
from vpp_core.training.stage2 import build_stage2_policy, train_stage2
from vpp_core.training.tvp_io import load_tvp

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[3]
INSTRUCTIONS = ("pick up the red cube", "push the blue cube")


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("training_data")
    bags = [
        write_synthetic_bag(root / "bags" / f"demo{i}", embodiment="panda", seconds=2.5, image_size=(48, 64),
                            instruction=INSTRUCTIONS[i % 2], seed=i)
        for i in range(2)
    ]
    summary = convert(bags, root / "ds", "panda", load_convert_config(fps=10.0, horizon=10, image_size=64), progress=False)
    assert not summary.rejected, summary.rejected
    return root / "ds"


def _stage1_config(dataset_root: Path, output: Path, *overrides: str) -> Stage1Config:
    return load_config(
        Stage1Config,
        REPO / "config" / "train" / "tiny_stage1.yaml",
        [f"data.root={dataset_root}", f"run.output_dir={output}", "run.progress_bar=false", *overrides],
    )


def _stage2_config(dataset_root: Path, output: Path, tvp_dir: Path, *overrides: str) -> Stage2Config:
    return load_config(
        Stage2Config,
        REPO / "config" / "train" / "tiny_stage2.yaml",
        [f"data.root={dataset_root}", f"run.output_dir={output}", f"init.tvp_dir={tvp_dir}", "run.progress_bar=false",
         f"feature_cache.directory={output}/cache", *overrides],
    )


def test_datasets_cut_clips_and_observations(dataset_root):
    dataset = VPPDataset(dataset_root)
    length = dataset.episodes[0].length
    clips = ClipDataset(dataset, image_size=64, num_frames=4, views=["static", "wrist"], frame_stride=3)
    assert len(clips) == dataset.num_frames * 2
    last = clips[(2 * (length - 2) + 1, 0)]  # episode 0, frame length - 2, wrist view
    assert last["frames"].tolist() == [length - 2, length - 1, length - 1, length - 1]
    assert last["clip"].shape == (4, 3, 64, 64) and torch.equal(last["condition"], last["clip"][0])
    assert -1.0 <= float(last["clip"].min()) and float(last["clip"].max()) <= 1.0
    normalizers = dataset.normalizers()
    observations = ObservationDataset(dataset, 64, ["static", "wrist"], normalizers, use_proprio=False)
    item = observations[3]
    assert item["images"].shape == (2, 3, 64, 64) and item["actions"].shape == (10, 7)
    episode = dataset.load_episode(0)
    expected = normalizers["actions"].normalize(episode.actions[3].astype(np.float64))
    np.testing.assert_allclose(item["actions"].numpy(), expected, atol=1e-6)
    assert item["instruction"] == INSTRUCTIONS[0]


def test_observations_can_take_every_kth_frame_with_its_full_action_chunk(dataset_root):
    dataset = VPPDataset(dataset_root)
    normalizers = dataset.normalizers()
    lengths = [episode.length for episode in dataset.episodes]
    every_third = ObservationDataset(dataset, 64, ["static", "wrist"], normalizers, use_proprio=False, frame_step=3)
    assert len(every_third) == sum(-(-length // 3) for length in lengths) < dataset.num_frames
    firsts = -(-lengths[0] // 3)
    assert [every_third[i]["frame"] for i in range(firsts)] == list(range(0, lengths[0], 3))
    second = every_third[firsts + 1]
    assert (second["episode"], second["frame"]) == (1, 3)
    episode = dataset.load_episode(1)
    np.testing.assert_allclose(second["actions"].numpy(), normalizers["actions"].normalize(episode.actions[3].astype(np.float64)), atol=1e-6)
    everything = ObservationDataset(dataset, 64, ["static", "wrist"], normalizers, use_proprio=False)
    assert torch.equal(second["images"], everything[lengths[0] + 3]["images"])
    with pytest.raises(ValueError, match="frame step"):
        ObservationDataset(dataset, 64, ["static", "wrist"], normalizers, use_proprio=False, frame_step=0)


def test_feature_cache_training_reads_each_episode_table_once(dataset_root):
    """Training from cached features draws frames at random across episodes: with images left out,
    the store keeps every episode's table whatever episode_cache says (with images it stays an LRU)."""
    dataset = VPPDataset(dataset_root)
    reads: list[int] = []
    original = dataset.load_episode

    def counting_load(i, *args, **kwargs):
        reads.append(i)
        return original(i, *args, **kwargs)

    dataset.load_episode = counting_load
    observations = ObservationDataset(dataset, 64, ["static", "wrist"], dataset.normalizers(), use_proprio=False,
                                      episode_cache=1, load_images=False)
    first_of_second = dataset.episodes[0].length
    for flat in (0, first_of_second, 1, first_of_second + 1, 2):
        assert "images" not in observations[flat]
    assert sorted(reads) == [0, 1]
    with_images = observations.with_images()
    reads.clear()
    for flat in (0, first_of_second, 1):
        with_images[flat]
    assert reads == [0, 1, 0]


def test_stage1_refuses_the_stage2_frame_sampling_setting(dataset_root, tmp_path):
    with pytest.raises(ValueError, match="stage-2 setting"):
        train_stage1(_stage1_config(dataset_root, tmp_path, "data.sample_every=2"))


def test_stage1_loss_falls_on_a_repeated_batch(dataset_root, tmp_path):
    config = _stage1_config(dataset_root, tmp_path)
    tvp = build_initial_tvp(config)
    dataset = VPPDataset(dataset_root)
    clips = ClipDataset(dataset, tvp.config.image_size, tvp.config.num_frames, ["static", "wrist"], frame_stride=2)
    items = [clips[i] for i in (0, 7, 30)]
    pixels = torch.stack([item["clip"] for item in items])
    with torch.no_grad():
        latents = vae_latents(tvp, pixels.flatten(0, 1)).view(3, 4, 4, 8, 8) * tvp.vae.config.scaling_factor
        condition = tvp.encode_images(torch.stack([item["condition"] for item in items]))
        text = tvp.encode_text([item["instruction"] for item in items]).hidden_states
    module = Stage1Module(tvp).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(12):
        loss = video_loss(module, tvp, latents, condition, text, torch.Generator().manual_seed(0), config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    # Only the UNet learns: VAE and text encoder stay frozen.
    assert all(p.grad is None for p in tvp.vae.parameters()) and all(p.grad is None for p in tvp.text_encoder.parameters())


class _RecordingDenoiser(torch.nn.Module):
    """Passes through to Stage1Module and keeps the noise levels and time ids it was called with."""

    def __init__(self, module: Stage1Module) -> None:
        super().__init__()
        self.module = module
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, noisy, sigma, condition, text_hidden, time_ids):
        self.calls.append((sigma.detach().clone(), time_ids.detach().clone()))
        return self.module(noisy, sigma, condition, text_hidden, time_ids)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_stage1_feature_sigma_fraction_trains_where_features_are_read(dataset_root, tmp_path, fraction):
    # A UNet trained from scratch must also learn at the one-step feature forward's noise level and
    # time ids, or stage 2 reads features from a regime it was never trained in.
    config = _stage1_config(dataset_root, tmp_path, f"loss.feature_sigma_fraction={fraction}")
    tvp = build_initial_tvp(config)
    batch = 64
    latents = torch.randn(batch, 4, 4, 8, 8) * 0.2
    condition = torch.randn(batch, 4, 8, 8) * 0.2
    text = tvp.encode_text(["push the blue cube"]).hidden_states.expand(batch, -1, -1)
    recorder = _RecordingDenoiser(Stage1Module(tvp))
    with torch.no_grad():
        loss = video_loss(recorder, tvp, latents, condition, text, torch.Generator().manual_seed(0), config)
    assert torch.isfinite(loss)
    (sigma, time_ids), = recorder.calls
    at_feature_sigma = sigma == tvp.config.feature_sigma
    fps = time_ids[:, 0]
    assert torch.all(fps[at_feature_sigma] == tvp.config.fps_id)
    assert torch.all(fps[~at_feature_sigma] == config.loss.fps_id) and tvp.config.fps_id != config.loss.fps_id
    assert torch.all(sigma[~at_feature_sigma] < 0.5 * tvp.config.feature_sigma)
    share = at_feature_sigma.float().mean().item()
    if fraction in (0.0, 1.0):
        assert share == fraction
    else:
        assert 0.3 < share < 0.7, share


def test_latent_std_is_the_same_from_the_latent_table_and_from_the_images(dataset_root, tmp_path):
    config = _stage1_config(dataset_root, tmp_path)
    tvp = build_initial_tvp(config)
    clips = ClipDataset(VPPDataset(dataset_root), tvp.config.image_size, 4, ["static", "wrist"], frame_stride=2)
    from_table = latent_std(LatentTable(clips, tvp, torch.device("cpu")), clips, tvp)
    from_images = latent_std(None, clips, tvp, max_frames=len(clips) * 4)
    assert 0.0 < from_table < 1.0  # a random VAE: far from SD's latent spread
    assert from_images == pytest.approx(from_table, rel=0.1)


def test_calibrated_conditioning_is_the_same_from_cached_latents_and_from_images(dataset_root, tmp_path):
    # Stage 1 trains on cached latents; features encode images. Both must see the same conditioning.
    tvp = build_initial_tvp(_stage1_config(dataset_root, tmp_path))
    clips = ClipDataset(VPPDataset(dataset_root), tvp.config.image_size, 2, ["static", "wrist"], frame_stride=1)
    pixels = torch.stack([clips[i]["condition"] for i in (0, 5, 11)])
    with torch.no_grad():
        unscaled = vae_latents(tvp, pixels)
        tvp.set_latent_scaling(3.0, scale_condition_latents=True)
        from_cache = tvp.condition_from_latents(unscaled)
        from_images = tvp.encode_images(pixels)
    torch.testing.assert_close(from_cache, from_images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_cache, unscaled * 3.0)


def test_stage1_then_stage2_then_engine_plans_in_robot_units(dataset_root, tmp_path):
    stage1 = train_stage1(_stage1_config(dataset_root, tmp_path / "s1"))
    assert stage1.step == 6 and all(np.isfinite(stage1.losses))
    assert (stage1.output / "tvp_config.json").is_file() and (stage1.output / "unet" / "config.json").is_file()
    # The preset's random VAE was calibrated: its scaled latents have unit spread on these frames,
    # conditioning latents are scaled too, and both survive saving and loading.
    trained = load_tvp(stage1.output)
    assert trained.config.scale_condition_latents and trained.vae.config.scaling_factor != 0.18215
    clips = ClipDataset(VPPDataset(dataset_root), trained.config.image_size, 2, ["static", "wrist"], frame_stride=1)
    pixels = torch.stack([clips[i]["condition"] for i in range(0, len(clips), 5)])
    with torch.no_grad():
        condition = trained.encode_images(pixels)
    assert 0.8 < float(condition.std()) < 1.25, float(condition.std())

    config = _stage2_config(dataset_root, tmp_path / "s2", stage1.output)
    stage2 = train_stage2(config)
    assert stage2.step == 6 and all(np.isfinite(stage2.losses))
    assert (tmp_path / "s2" / "config.yaml").is_file() and list((tmp_path / "s2" / "tensorboard").rglob("events.*"))

    engine = PolicyEngine.from_checkpoint(stage2.output)
    dataset = VPPDataset(dataset_root)
    episode = dataset.load_episode(1)
    chunk = engine.plan({view: episode.frames[view][5] for view in ("static", "wrist")}, episode.instruction)
    assert chunk.shape == (10, 7) and np.isfinite(chunk).all()
    normalizer = dataset.normalizers()["actions"]
    assert np.all(chunk >= normalizer.low - 1e-9) and np.all(chunk <= normalizer.high + 1e-9)
    # The checkpoint carries the Video Former's feature standardisation fitted in stage 2.
    assert not torch.equal(engine.policy.video_former.feature_std, torch.ones_like(engine.policy.video_former.feature_std))


def test_stage2_trains_a_panda_policy_on_joint_proprio_when_asked(dataset_root, tmp_path):
    config = load_convert_config(fps=10.0, horizon=10, image_size=64)
    config.embodiments["panda"] = dataclasses.replace(config.embodiments["panda"], proprio=True)
    bags = [write_synthetic_bag(tmp_path / "bags" / f"demo{i}", embodiment="panda", seconds=2.5, image_size=(48, 64),
                                instruction=INSTRUCTIONS[i % 2], seed=i) for i in range(2)]
    assert not convert(bags, tmp_path / "ds", "panda", config, progress=False).rejected
    joints = [f"fr3_joint{i}" for i in range(1, 8)]
    assert VPPDataset(tmp_path / "ds").info.proprio_names == joints

    # The panda preset has no proprio token (as the reference); stage 2 adds one on request.
    stage2 = train_stage2(_stage2_config(tmp_path / "ds", tmp_path / "s2", Path(""), "init.random_tvp=true",
                                         "init.tvp_dir=", "init.proprio_dim=7"))
    engine = PolicyEngine.from_checkpoint(stage2.output, resize_images=True)
    assert engine.policy.proprio_dim == 7 and engine.metadata["proprio_names"] == joints
    episode = VPPDataset(tmp_path / "ds").load_episode(0)
    images = {view: episode.frames[view][3] for view in ("static", "wrist")}
    with pytest.raises(ValueError, match="proprio"):
        engine.plan(images, episode.instruction)
    chunk = engine.plan(images, episode.instruction, proprio=episode.proprio[3])
    assert chunk.shape == (10, 7) and np.isfinite(chunk).all()
    assert engine.normalizers["proprio"].dim == 7


def test_stage2_says_how_to_fix_a_proprio_mismatch_with_the_data_set(dataset_root, tmp_path):
    config = _stage2_config(dataset_root, tmp_path / "s2", Path(""), "init.random_tvp=true", "init.tvp_dir=",
                            "init.proprio_dim=7")
    with pytest.raises(ValueError, match=r"7-d proprio vector but data set .* has none: set init.proprio_dim=0"):
        train_stage2(config)


def test_stage2_loss_falls_on_a_repeated_batch(dataset_root, tmp_path):
    config = _stage2_config(dataset_root, tmp_path, Path(""), "init.random_tvp=true", "init.tvp_dir=")
    policy = build_stage2_policy(config)
    dataset = VPPDataset(dataset_root)
    observations = ObservationDataset(dataset, policy.image_size, ["static", "wrist"], dataset.normalizers(), False)
    items = [observations[i] for i in (0, 9, 30, 41)]
    with torch.no_grad():
        text = policy.encode_text([item["instruction"] for item in items])
        features = policy.predictive_features(torch.stack([item["images"] for item in items]), text)
    batch = {"features": features, "lang_emb": text.pooled, "actions": torch.stack([item["actions"] for item in items])}
    optimizer = torch.optim.AdamW(list(policy.trainable_parameters()), lr=2e-3)
    policy.train()
    losses = []
    for _ in range(30):
        loss = policy.compute_loss(batch, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
