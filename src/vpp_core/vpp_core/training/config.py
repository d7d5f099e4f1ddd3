"""Training configurations: dataclasses filled from a YAML file plus ``key.sub=value`` overrides.

Every number of a training run lives in one YAML file under ``config/train/``; the command line
can override any field with dotted keys (values are parsed as YAML, so ``optim.lr=3e-4``,
``data.views=[static]`` and ``run.resume=null`` all work). The resolved configuration is written
to ``<run.output_dir>/config.yaml`` so a run can always be reproduced from its own directory.

Defaults follow the VPP reference (``shared/notes/vpp-reference.md``): AdamW betas (0.9, 0.9),
weight decay 0.05, warm-up then decay, EMA 0.9999; TVP fine-tuning lr 5e-6, EDM sigma ~
lognormal(0.7, 1.6), loss weight (s^2 + 1) / s^2, 5 % language dropout; stage-2 lr 1e-4.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

import yaml

from ..config import dataclass_from_dict, dataclass_to_dict

__all__ = [
    "DataConfig",
    "AugmentConfig",
    "OptimConfig",
    "EMAConfig",
    "RunConfig",
    "InitConfig",
    "Stage1LossConfig",
    "Stage1Config",
    "Stage2Config",
    "load_config",
    "apply_overrides",
    "save_config",
]

T = TypeVar("T")


@dataclass
class AugmentConfig:
    """Light image augmentation (training only; off for the feature / latent caches)."""

    enabled: bool = False
    # Random shift: pad by this many pixels (replicate) and crop back at a random offset.
    shift_pixels: int = 0
    # Brightness / contrast jitter: multiply by U(1 - c, 1 + c), add U(-b, b) (on [-1, 1] pixels).
    brightness: float = 0.0
    contrast: float = 0.0


@dataclass
class DataConfig:
    """Which data set and how samples are cut from it."""

    root: str = ""  # a vpp-dataset directory (meta/info.json)
    views: tuple[str, ...] = ("static", "wrist")
    # Stage 1: a clip of num_frames frames t, t + s, ..., t + (num_frames - 1) s (s = frame_stride),
    # repeating the last frame past the episode end; its first frame is the condition.
    frame_stride: int = 1
    # Stage 2: train on frames 0, k, 2k, ... of each episode (k = sample_every), each with its full
    # action chunk. Neighbouring frames at the recording rate are near duplicates, and with a
    # feature cache, building it (one TVP pass per frame) is most of stage 2's time on a CPU.
    sample_every: int = 1
    # Episodes held out of training (by index) for evaluation; empty: train on all.
    exclude_episodes: tuple[int, ...] = ()
    num_workers: int = 0
    # Decoded episodes kept in memory per worker (video decoding is the expensive part).
    episode_cache: int = 64
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine / linear decay (reference: betas 0.9/0.9, wd 0.05)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 0.05
    eps: float = 1e-8
    warmup_steps: int = 1000
    decay: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1  # final lr = lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping


@dataclass
class EMAConfig:
    """Exponential moving average of the trained weights (reference decay 0.9999).

    The effective decay at optimizer step n is min(decay, (1 + n) / (warmup + n)), so short runs
    are not dominated by the initial weights.
    """

    enabled: bool = True
    decay: float = 0.9999
    warmup: int = 10
    update_every: int = 1


@dataclass
class RunConfig:
    """Loop, logging, checkpointing and precision settings shared by both stages."""

    output_dir: str = "runs/train"
    max_steps: int = 10000  # optimizer steps
    batch_size: int = 8  # per process, per micro-batch
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    # null: start fresh (refuses a run dir that already has checkpoints); "auto": the latest
    # checkpoint in output_dir if any; else a path to a checkpoints/step_XXXXXXX directory.
    resume: Optional[str] = "auto"
    progress_bar: bool = True
    tensorboard: bool = True
    # CPU threads for torch in this process (0: torch's default).
    torch_threads: int = 0


@dataclass
class InitConfig:
    """Where the TVP comes from.

    Stage 1: ``tvp_dir`` = a TVP directory (this package's layout, or a released SVD pipeline
    directory with ``text_encoder_dir``), else a random TVP of ``preset``.
    Stage 2: ``tvp_dir`` = stage 1's output (required unless ``preset`` with random TVP is asked
    for explicitly by ``random_tvp: true``, meant for tests only).
    """

    preset: str = "panda-tiny"
    tvp_dir: str = ""
    text_encoder_dir: str = ""
    vae_dir: str = ""
    random_tvp: bool = False
    seed: int = 0  # initialisation seed of freshly built parts
    # Override the TVP's input resolution / predicted frames (0: keep the preset's or the loaded
    # TVP's). The networks are resolution-agnostic; the Video Former is sized from the result.
    image_size: int = 0
    num_frames: int = 0
    # Stage 2: width of the action head's proprio token; -1 keeps the preset's (panda 0, xhand 19),
    # 0 trains without proprio. It must equal the data set's proprio vector (the converter's
    # ``embodiments.<name>.proprio``).
    proprio_dim: int = -1

    def tvp_overrides(self) -> dict[str, int]:
        return {k: v for k, v in (("image_size", self.image_size), ("num_frames", self.num_frames)) if v}


@dataclass
class Stage1LossConfig:
    """EDM video loss (reference TVP fine-tuning)."""

    sigma_mean: float = 0.7  # ln(sigma) ~ Normal(0.7, 1.6)
    sigma_std: float = 1.6
    language_dropout: float = 0.05  # probability of all-zero text states (classifier-free guidance)
    fps_id: int = 7  # the reference fine-tunes with fps id 7 (and extracts features with 4)
    # Fraction of samples trained in the feature forward's own regime: noise level
    # TVPConfig.feature_sigma (700) and the TVP's feature fps id. Stage 2 and the policy read the
    # UNet only there. A pretrained SVD has seen such noise levels in pre-training, so the
    # reference leaves this at 0; a UNet trained from scratch (the CPU presets) almost never would
    # (lognormal(0.7, 1.6) puts 0.1 % of samples above sigma 300), and its features are then an
    # untrained, nearly input-independent pattern.
    feature_sigma_fraction: float = 0.0


@dataclass
class Stage1Config:
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: Stage1LossConfig = field(default_factory=Stage1LossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6, warmup_steps=500))
    ema: EMAConfig = field(default_factory=EMAConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/stage1"))
    # Set the VAE's scaling factor to 1 / std of the training frames' latents and scale the
    # conditioning latents too, as Stable Diffusion derived 0.18215 for its own VAE. For a TVP
    # built from a preset (random VAE, no pretrained weights offline): its latents have std ~0.24,
    # so x 0.18215 leaves videos at std ~0.04 while the EDM noise levels assume 1, and the UNet
    # learns little beyond the mean frame. Ignored for a loaded TVP (it keeps its trained scale).
    calibrate_latent_scale: bool = True
    # Cache the VAE latents of every frame in memory (the VAE is frozen and latents are its
    # posterior mode, so they never change); needs augmentation off.
    cache_latents: bool = True
    # Trade compute for memory in the UNet's backward (full size on GPU).
    gradient_checkpointing: bool = False
    # Also write a full VPP policy checkpoint? No: stage 1's product is the TVP directory
    # <output_dir>/tvp (unet/, vae/, text_encoder/, tvp_config.json).


@dataclass
class FeatureCacheConfig:
    """On-disk cache of the frozen TVP's predictive features for every training frame."""

    enabled: bool = False
    # default: <run.output_dir>/feature_cache; point several runs at one directory to share it
    # (entries are keyed by TVP + data set, so a shared directory never mixes them up).
    directory: str = ""
    dtype: str = "float16"  # float16 | float32


@dataclass
class Stage2Config:
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/stage2"))
    feature_cache: FeatureCacheConfig = field(default_factory=FeatureCacheConfig)
    # Standardise the TVP features (mean per element, std per (frame, channel)) with training-set
    # statistics (stored in the Video Former; see VideoFormer.set_feature_statistics for why),
    # estimated from at most this many frames spread evenly over the training set.
    normalize_features: bool = True
    feature_stats_frames: int = 2048
    # Standardise the pooled instruction embeddings by the training instructions' mean and spread
    # (stored in the action head; see DiffusionActionHead.set_language_statistics for why).
    normalize_language: bool = True


__all__.append("FeatureCacheConfig")


_FLOAT_PATTERN = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def _yaml_floats(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``3e-4`` (no dot) as a string: read such strings as floats."""
    if isinstance(value, str) and _FLOAT_PATTERN.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _yaml_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_floats(v) for v in value]
    return value


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} has an empty key")
    value = _yaml_floats(yaml.safe_load(raw)) if raw.strip() else ""
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of nested dict ``data`` with each ``a.b.c=value`` applied (value parsed as YAML)."""
    result = copy.deepcopy(dict(data))
    for text in overrides:
        path, value = _parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                raise ValueError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return result


def load_config(cls: type[T], path: Union[str, Path, None], overrides: Sequence[str] = ()) -> T:
    """Build config ``cls`` from YAML ``path`` (None: defaults) and dotted overrides.

    Unknown keys (a typo in the file or an override) raise ``ValueError`` naming the known keys.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a training config must be a mapping at the top level")
        data = _yaml_floats(loaded)
    data = apply_overrides(data, overrides)
    return dataclass_from_dict(cls, data)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclass_to_dict(config)


def save_config(config: Any, directory: Union[str, Path], name: str = "config.yaml") -> Path:
    """Write the resolved config as YAML into ``directory``; returns the file path."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(yaml.safe_dump(dataclass_to_dict(config), sort_keys=False))
    return path


def replace_nested(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` for nested dataclasses given as dotted keys (``run__max_steps``)."""
    result = copy.deepcopy(config)
    for dotted, value in changes.items():
        parts = dotted.split("__")
        node: Any = result
        for part in parts[:-1]:
            node = getattr(node, part)
        if not dataclasses.is_dataclass(node) or not hasattr(node, parts[-1]):
            raise AttributeError(dotted)
        setattr(node, parts[-1], value)
    return result


__all__ += ["config_to_dict", "replace_nested"]
