"""Latency / memory / FLOP benchmark of one VPP re-plan.

Usage::

    python -m vpp_core.model.bench --preset panda-tiny --device cpu [--dtype bf16] [--compile] [--iters N]
    # the GPU target (full-size Panda, bf16, compiled; <= 30 ms and <= 8 GB on an H100):
    python -m vpp_core.model.bench --preset panda --device cuda --dtype bf16 --compile
    # add --cuda-graphs to replay the whole plan as one CUDA graph (per-stage times then collapse
    # into one "graph_replay" stage)

The policy is randomly initialised from the preset (latency does not depend on weight values).
Each timed iteration is a full ``PolicyEngine.plan`` (uint8 camera images in, denormalised
actions out) with the instruction embedding cached, as at rollout; the first call's text
encoding is reported separately. Stages are synchronised on CUDA for timing (``profile=True``),
which adds a little latency to the total compared to an unprofiled plan.

Printed: per-stage latency (mean / p50 / p90 ms: image preprocessing, VAE encode, UNet up to the
last needed up block, Video Former, action-head encoder, each DiT sampling step, total), peak
memory (CUDA max allocated, or CPU peak RSS), FLOPs per stage (``torch.utils.flop_counter``:
matmuls, convolutions and attention; counted once on the eager model before any compilation), on CUDA the achieved fraction of the device's dense bf16 peak,
and the full vs. truncated UNet ratio (FLOPs and measured time) for this preset.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .engine import DTYPES, PolicyEngine
from .normalization import PercentileNormalizer
from .policy import VPPPolicy
from .presets import PRESET_NAMES, build_policy

# Dense (no sparsity) tensor-core bf16 peaks in TFLOP/s from the vendors' datasheets; the first
# substring found in torch.cuda.get_device_name() wins, so specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L40", 181.0),
    ("RTX 6000 Ada", 364.2),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
    ("A10", 125.0),
)


def peak_bf16_flops(device_name: str) -> Optional[float]:
    """Dense bf16 peak FLOP/s for a CUDA device name, or None if not in the table."""
    for fragment, tflops in PEAK_BF16_TFLOPS:
        if fragment in device_name:
            return tflops * 1e12
    return None


def _count_flops(function: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return int(counter.get_total_flops())


def stage_flops(policy: VPPPolicy) -> dict[str, int]:
    """FLOPs of each stage of one plan (batch 1), counted by running the eager model once.

    Run before the engine compiles anything, on whatever device the policy is on.
    """
    tvp, cfg = policy.tvp, policy.config
    device = policy.device
    views, size = len(cfg.view_names), cfg.tvp.image_size
    images = torch.zeros(1, views, 3, size, size, device=device)
    proprio = torch.zeros(1, policy.proprio_dim, device=device) if policy.proprio_dim else None
    last = cfg.tvp.feature_blocks[-1]
    flops: dict[str, int] = {}
    with torch.inference_mode():
        flops["text_encode"] = _count_flops(lambda: tvp.encode_text(["pick up the red block"]))
        text = tvp.encode_text(["pick up the red block"])
        flops["vae_encode"] = _count_flops(lambda: tvp.encode_images(images[0]))
        inputs = tvp.prepare_feature_inputs(images, text.hidden_states)
        flops["unet"] = _count_flops(lambda: tvp.run_up_blocks(inputs, last))
        flops["unet_full"] = _count_flops(
            lambda: tvp.unet(inputs.sample, inputs.timestep, inputs.encoder_hidden_states, inputs.added_time_ids)
        )
        features = tvp.aggregate_features(tvp.run_up_blocks(inputs, last), 1, views)
        flops["video_former"] = _count_flops(lambda: policy.video_former(features))
        tokens = policy.video_former(features)
        flops["head_encode"] = _count_flops(lambda: policy.action_head.encode(text.pooled, tokens, proprio))
        context = policy.action_head.encode(text.pooled, tokens, proprio)
        flops["action_sampling"] = _count_flops(lambda: policy.action_head.sample(context))
    return flops


def _summary(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return statistics.fmean(values) * 1e3, statistics.median(values) * 1e3, p90 * 1e3


def _time_unet_ratio(engine: PolicyEngine, iters: int) -> tuple[float, float]:
    """Mean seconds of the full UNet forward and of the truncated one, same inputs, same device."""
    policy = engine.policy
    tvp = policy.tvp
    views, size = len(policy.view_names), policy.image_size
    images = torch.zeros(1, views, 3, size, size, device=engine.device)
    text = engine.encode_instruction("pick up the red block")
    last = policy.config.tvp.feature_blocks[-1]

    def timed(function: Callable[[], object]) -> float:
        function()
        engine._sync()
        start = time.perf_counter()
        for _ in range(iters):
            function()
        engine._sync()
        return (time.perf_counter() - start) / iters

    with torch.inference_mode(), engine._autocast():
        inputs = tvp.prepare_feature_inputs(images, text.hidden_states)
        full = timed(lambda: tvp.unet(inputs.sample, inputs.timestep, inputs.encoder_hidden_states, inputs.added_time_ids))
        truncated = timed(lambda: tvp.run_up_blocks(inputs, last))
    return full, truncated


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="panda-tiny", choices=PRESET_NAMES)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet blocks, VAE encoder, Video Former and head")
    parser.add_argument("--cuda-graphs", action="store_true", help="capture the whole plan in one CUDA graph")
    parser.add_argument("--iters", type=int, default=10, help="timed plans")
    parser.add_argument("--warmup", type=int, default=2, help="untimed plans first (compilation, autotuning)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-unet-ratio", action="store_true", help="do not time the full UNet (slow on CPU at full size)")
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    print(f"preset {args.preset} | device {device} | dtype {args.dtype} | compile {args.compile} | cuda graphs {args.cuda_graphs}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    else:
        print(f"CPU threads: {torch.get_num_threads()}")

    build_start = time.perf_counter()
    policy = build_policy(args.preset, seed=0)
    policy.to(device).eval()
    flops = stage_flops(policy)
    rng = np.random.default_rng(0)
    normalizers = {"actions": PercentileNormalizer.fit(rng.uniform(-1, 1, size=(256, policy.action_dim)))}
    if policy.proprio_dim:
        normalizers["proprio"] = PercentileNormalizer.fit(rng.uniform(-1, 1, size=(256, policy.proprio_dim)))
    engine = PolicyEngine(
        policy,
        normalizers,
        device=device,
        dtype=args.dtype,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        seed=0,
        profile=True,
    )
    print(f"model built in {time.perf_counter() - build_start:.1f} s, {sum(p.numel() for p in policy.parameters()) / 1e6:.1f} M parameters")
    images = {view: rng.integers(0, 256, size=(policy.image_size, policy.image_size, 3), dtype=np.uint8) for view in policy.view_names}
    proprio = np.zeros(policy.proprio_dim) if policy.proprio_dim else None
    instruction = "pick up the red block and put it in the drawer"

    first_start = time.perf_counter()
    engine.plan(images, instruction, proprio)
    first_timings = dict(engine.last_timings)
    print(f"first plan (incl. text encode, compile/capture): {(time.perf_counter() - first_start) * 1e3:.1f} ms")
    for _ in range(max(0, args.warmup - 1)):
        engine.plan(images, instruction, proprio)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    samples: dict[str, list[float]] = {}
    for _ in range(args.iters):
        engine.plan(images, instruction, proprio)
        for stage, seconds in engine.last_timings.items():
            samples.setdefault(stage, []).append(seconds)

    steps = sum(1 for stage in samples if stage.startswith("dit_step_"))
    per_step_flops = flops["action_sampling"] / max(steps, 1)
    stage_order = ["preprocess", "vae_encode", "unet", "video_former", "head_encode"]
    stage_order += [f"dit_step_{i}" for i in range(steps)] + ["action_sampling", "graph_replay", "postprocess", "total"]
    flop_of = {
        "vae_encode": flops["vae_encode"],
        "unet": flops["unet"],
        "video_former": flops["video_former"],
        "head_encode": flops["head_encode"],
        "action_sampling": flops["action_sampling"],
        "total": flops["vae_encode"] + flops["unet"] + flops["video_former"] + flops["head_encode"] + flops["action_sampling"],
    }
    print()
    print(f"{'stage':<18}{'mean ms':>10}{'p50 ms':>10}{'p90 ms':>10}{'GFLOP':>12}")
    if "text_encode" in first_timings:
        print(f"{'text_encode (1st)':<18}{first_timings['text_encode'] * 1e3:>10.2f}{'':>10}{'':>10}{flops['text_encode'] / 1e9:>12.4g}")
    for stage in stage_order:
        if stage not in samples:
            continue
        mean, p50, p90 = _summary(samples[stage])
        stage_flop = per_step_flops if stage.startswith("dit_step_") else flop_of.get(stage)
        flop_text = f"{stage_flop / 1e9:>12.4g}" if stage_flop is not None else f"{'':>12}"
        print(f"{stage:<18}{mean:>10.2f}{p50:>10.2f}{p90:>10.2f}{flop_text}")
    print("(dit_step FLOPs = sampling FLOPs / steps; they include the context K/V projection done once per plan)")

    total_mean = statistics.fmean(samples["total"])
    print()
    if device.type == "cuda":
        peak_bytes = torch.cuda.max_memory_allocated(device)
        print(f"peak CUDA memory allocated: {peak_bytes / 2**30:.2f} GiB")
        achieved = flop_of["total"] / total_mean
        peak = peak_bf16_flops(torch.cuda.get_device_name(device))
        if peak is not None:
            print(f"achieved {achieved / 1e12:.1f} TFLOP/s = {100 * achieved / peak:.1f} % of the device's dense bf16 peak ({peak / 1e12:.0f} TFLOP/s)")
        else:
            print(f"achieved {achieved / 1e12:.1f} TFLOP/s (device not in the peak table)")
    else:
        peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak CPU RSS: {peak_rss_kib / 2**20:.2f} GiB")
        print(f"achieved {flop_of['total'] / total_mean / 1e9:.1f} GFLOP/s")
    print(f"plans per second: {1.0 / total_mean:.2f}")

    print()
    flop_ratio = flops["unet_full"] / flops["unet"]
    print(
        f"UNet FLOPs: full {flops['unet_full'] / 1e9:.4g} GFLOP vs truncated after up_blocks[{policy.config.tvp.feature_blocks[-1]}] "
        f"{flops['unet'] / 1e9:.4g} GFLOP -> full / truncated = {flop_ratio:.2f}x"
    )
    if not args.skip_unet_ratio:
        full_seconds, truncated_seconds = _time_unet_ratio(engine, max(1, min(args.iters, 5)))
        print(
            f"UNet time:  full {full_seconds * 1e3:.2f} ms vs truncated {truncated_seconds * 1e3:.2f} ms "
            f"-> full / truncated = {full_seconds / truncated_seconds:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
