"""Training checkpoints: an interrupted run resumed from a checkpoint continues exactly like the
uninterrupted one (same batches, noise, optimizer and EMA state), the feature cache gives the
same losses as computing features on the fly, config overrides and the learning-rate schedule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vpp_core.training.config import OptimConfig, Stage2Config, load_config
from vpp_core.training.loop import StepBatchSampler, lr_multiplier
from vpp_core.training.stage2 import train_stage2
from vpp_core.training.toy_data import write_reaching_dataset

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return write_reaching_dataset(tmp_path_factory.mktemp("toy") / "ds", episodes=4, length=12, image_size=64)


def _config(toy_root: Path, output: Path, cache: Path, *overrides: str) -> Stage2Config:
    return load_config(
        Stage2Config,
        REPO / "config" / "train" / "tiny_stage2.yaml",
        [
            f"data.root={toy_root}", f"run.output_dir={output}", "run.progress_bar=false", "run.tensorboard=false",
            "init.random_tvp=true", "init.image_size=64", "init.num_frames=4", f"feature_cache.directory={cache}",
            "run.max_steps=4", "run.checkpoint_every=2", "run.keep_checkpoints=0", *overrides,
        ],
    )


def _load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same_nested(a, b, where="", exact=True):
    if torch.is_tensor(a):
        if exact:
            assert torch.equal(a, b), where
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=where)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_nested(a[key], b[key], f"{where}.{key}", exact)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_nested(x, y, f"{where}[{i}]", exact)
    elif isinstance(a, float) and not exact:
        assert a == pytest.approx(b, rel=1e-6), where
    else:
        assert a == b, where


def test_load_state_restores_step_model_optimizer_schedule_and_ema_exactly(tmp_path):
    from vpp_core.training.config import EMAConfig, RunConfig
    from vpp_core.training.loop import (
        ExponentialMovingAverage, TrainLoop, build_optimizer, build_scheduler, make_accelerator,
    )
    from vpp_core.training.stage1 import _reset_accelerate_state

    run = RunConfig(output_dir=str(tmp_path), max_steps=3, batch_size=4, checkpoint_every=0, progress_bar=False,
                    tensorboard=False, resume="auto")
    optim = OptimConfig(lr=1e-2, warmup_steps=2)
    data = torch.randn(64, 5)

    def setup(seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
        accelerator = make_accelerator(run, tmp_path)
        optimizer = build_optimizer(model.named_parameters(), optim)
        scheduler = build_scheduler(optimizer, optim, run.max_steps)
        model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)
        ema = ExponentialMovingAverage(model, EMAConfig(decay=0.9, warmup=1))
        accelerator.register_for_checkpointing(ema)

        def batches(start: int):
            sampler = StepBatchSampler(64, run.batch_size, run.seed, start_batch=start)
            return (data[[i for i, _ in batch]] for batch in sampler)

        loop = TrainLoop(accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                         run=run, optim=optim, ema_config=EMAConfig(decay=0.9, warmup=1), output_dir=tmp_path,
                         loss_fn=lambda m, x, g: m(x + 0.1 * torch.randn(x.shape, generator=g)).square().mean(),
                         make_batches=batches, name="toy")
        return loop, model, optimizer, scheduler, ema

    try:
        loop, model, optimizer, scheduler, ema = setup(0)
        loop.train()
        loop.save_checkpoint()
        saved = (loop.step, {k: v.clone() for k, v in model.state_dict().items()}, optimizer.state_dict(),
                 scheduler.state_dict(), ema.state_dict())
        _reset_accelerate_state()
        loop2, model2, optimizer2, scheduler2, ema2 = setup(1)  # different init: everything must come from disk
        assert loop2.maybe_resume() is not None
        assert loop2.step == saved[0] == 3
        _assert_same_nested(dict(model2.state_dict()), saved[1], "model")
        _assert_same_nested(optimizer2.state_dict(), saved[2], "optimizer")
        _assert_same_nested(scheduler2.state_dict(), saved[3], "scheduler")
        _assert_same_nested(ema2.state_dict(), saved[4], "ema")
    finally:
        _reset_accelerate_state()


def test_resume_continues_exactly_and_cache_hits_give_the_same_losses(toy_root, tmp_path):
    cache = tmp_path / "cache"
    full = train_stage2(_config(toy_root, tmp_path / "full", cache))
    assert full.step == 4 and len(full.losses) == 4 and np.isfinite(full.losses).all()
    keys = list(cache.iterdir())
    assert len(keys) == 1 and (keys[0] / "meta.json").is_file()

    # An "interrupted" run: only the step-2 checkpoint exists; resume=auto continues from it
    # (and hits the feature cache the first run built).
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_0000002", resumed_dir / "checkpoints" / "step_0000002")
    resumed = train_stage2(_config(toy_root, resumed_dir, cache))
    assert resumed.step == 4 and len(resumed.losses) == 2
    assert resumed.losses == full.losses[2:]
    assert list(cache.iterdir()) == keys  # no second cache

    # Same batches and noise, so the same losses bit for bit; weights agree to float rounding
    # (CPU kernels may round the last bit differently for tensors loaded from disk).
    for name in ("model.safetensors",):
        a = load_file(tmp_path / "full" / "checkpoints" / "step_0000004" / name)
        b = load_file(resumed_dir / "checkpoints" / "step_0000004" / name)
        _assert_same_nested(a, b, name, exact=False)
    for name in ("optimizer.bin", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):  # optimizer, LR schedule, EMA
        _assert_same_nested(
            _load_state(tmp_path / "full" / "checkpoints" / "step_0000004" / name),
            _load_state(resumed_dir / "checkpoints" / "step_0000004" / name),
            name,
            exact=False,
        )
    final_a = load_file(tmp_path / "full" / "checkpoint" / "model.safetensors")
    final_b = load_file(resumed_dir / "checkpoint" / "model.safetensors")
    _assert_same_nested(final_a, final_b, "final checkpoint", exact=False)

    # Without the cache the features are computed on the fly: the same losses (up to float noise).
    uncached = train_stage2(_config(toy_root, tmp_path / "uncached", cache, "feature_cache.enabled=false", "run.max_steps=2"))
    np.testing.assert_allclose(uncached.losses, full.losses[:2], rtol=1e-4)


def test_stage2_on_every_kth_frame_caches_only_those_frames(toy_root, tmp_path):
    cache = tmp_path / "cache"
    full = train_stage2(_config(toy_root, tmp_path / "all", cache, "run.max_steps=2"))
    sparse = train_stage2(_config(toy_root, tmp_path / "sparse", cache, "run.max_steps=2", "data.sample_every=3"))
    metas = {json.loads(meta.read_text())["frames"]: meta.parent.name for meta in cache.glob("*/meta.json")}
    # 4 episodes of 12 frames: all 48, or frames 0, 3, 6, 9 of each; two caches side by side.
    assert sorted(metas) == [16, 48]
    assert np.all(np.isfinite(sparse.losses)) and not np.allclose(sparse.losses, full.losses)
    # The cached sparse features are looked up for the same frames the uncached run computes.
    uncached = train_stage2(_config(toy_root, tmp_path / "uncached", cache, "run.max_steps=2", "data.sample_every=3",
                                    "feature_cache.enabled=false"))
    np.testing.assert_allclose(uncached.losses, sparse.losses, rtol=1e-4)


def test_fresh_start_refuses_a_run_dir_with_checkpoints(toy_root, tmp_path):
    output = tmp_path / "run"
    (output / "checkpoints" / "step_0000002").mkdir(parents=True)
    (output / "checkpoints" / "step_0000002" / "trainer_state.json").write_text('{"step": 2}')
    with pytest.raises(FileExistsError, match="run.resume=auto"):
        train_stage2(_config(toy_root, output, tmp_path / "cache", "run.resume=null"))


def test_config_overrides_parse_yaml_and_reject_unknown_keys():
    config = load_config(
        Stage2Config, REPO / "config" / "train" / "tiny_stage2.yaml",
        ["optim.lr=3e-4", "data.views=[static]", "run.resume=null", "optim.betas=[0.9, 0.95]"],
    )
    assert config.optim.lr == 3e-4 and config.data.views == ("static",) and config.run.resume is None
    assert config.optim.betas == (0.9, 0.95)
    with pytest.raises(ValueError, match="unknown keys"):
        load_config(Stage2Config, None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(Stage2Config, None, ["optim.lr"])


def test_every_shipped_training_config_loads():
    from vpp_core.training.config import Stage1Config

    paths = sorted((REPO / "config" / "train").glob("*.yaml"))
    assert paths
    for path in paths:
        cls = Stage1Config if "stage1" in path.name else Stage2Config
        load_config(cls, path)


def test_schedule_warms_up_then_decays_and_sampler_resumes_mid_stream():
    optim = OptimConfig(lr=1.0, warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    values = [lr_multiplier(step, optim, 100) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(b <= a for a, b in zip(values[9:], values[10:])) and values[-1] == pytest.approx(0.1, abs=1e-3)
    sampler = StepBatchSampler(num_items=7, batch_size=3, seed=5)
    stream = [sampler.batch(i) for i in range(10)]
    assert StepBatchSampler(7, 3, 5, start_batch=6).batch(6) == stream[6]
    indices = [index for batch in stream[:7] for index, _ in batch[:]][:21]
    assert sorted(indices[:7]) == list(range(7))  # every item once per epoch
    ranks = [StepBatchSampler(7, 3, 5, rank=r, world=2).batch(0) for r in (0, 1)]
    assert ranks == [stream[0], stream[1]]
