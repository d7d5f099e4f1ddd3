"""Text-guided Video Prediction (TVP) model: VPP's predictive visual encoder.

The TVP is Stable Video Diffusion's ``UNetSpatioTemporalConditionModel`` conditioned on language
instead of SVD's CLIP image embedding, plus SVD's ``AutoencoderKLTemporalDecoder`` and a CLIP text
encoder (``CLIPTextModelWithProjection``, clip-vit-base-patch32 in the paper).

What it computes
----------------
- ``encode_text``: CLIP ``last_hidden_state`` over at most 20 tokens (512-d), plus a fixed 1-D
  sin-cos position code (the reference adds it, and released TVP weights were trained with it),
  widened to the UNet's ``cross_attention_dim`` by ``TextConditionWidener`` -> the UNet's
  ``encoder_hidden_states``. The pooled, projected 512-d CLIP embedding is returned too; it is the
  action head's language token.
- ``features``: ONE UNet forward at a fixed, very high noise level (sigma 700, the first step of
  SVD's sampler) and returns the outputs of the chosen up-sampling blocks, resized to one
  resolution and concatenated on channels: ``[B, V, T, C, h, w]``. The forward stops after the
  last block needed (``run_up_blocks``), which saves ~40 % of the UNet's FLOPs at full size.
- ``predict_video``: the full multi-step video prediction (EDM / DPM-Solver-1 sampler from
  ``edm.py``, then VAE decode) for previews.

Conditioning latents
--------------------
The input image is VAE-encoded (mode of the latent distribution) and repeated over the T frames,
then concatenated on channels with the noisy video latents (4 + 4 = 8 channels). The *noisy video*
latents live in the scaled space (x ``vae.config.scaling_factor``, 0.18215); the *conditioning*
latents are NOT scaled by default: SVD, the reference TVP fine-tuning
(``condition_latent / scaling_factor`` of scaled latents) and the reference feature extraction
(``_encode_vae_image``, unscaled mode) all feed unscaled conditioning latents, so released weights
expect them. ``TVPConfig.scale_condition_latents=True`` exists for a TVP trained the other way.

Loading a released VPP TVP checkpoint (no conversion)
----------------------------------------------------
A released TVP (e.g. ``svd-robot`` / ``svd-robot-calvin``) is a diffusers
``StableVideoDiffusionPipeline`` directory; only its ``unet/`` and ``vae/`` folders are used (the
SVD image encoder is replaced by language). The text encoder is a transformers CLIP directory
(e.g. ``clip-vit-base-patch32``), which also holds the tokenizer files::

    tvp = TextGuidedVideoPredictor.from_pretrained(
        "/models/svd-robot-calvin",             # has unet/ and vae/ (or pass a bare UNet dir + vae_dir=)
        text_encoder_dir="/models/clip-vit-base-patch32",
        feature_blocks=(0, 1),                  # any TVPConfig field can be overridden here
    )

Weights are read with ``from_pretrained(..., local_files_only=True)``: nothing is downloaded.

Offline tokenizer
-----------------
A model built from a config (tiny presets, tests, or a fresh full-size model) still needs CLIP's
exact BPE tokenisation. CLIP's BPE merge list ships inside the ``open-clip-torch`` wheel
(``open_clip/bpe_simple_vocab_16e6.txt.gz``; install it with ``pip install --no-deps
open-clip-torch`` so it does not pull torchvision). ``build_offline_clip_tokenizer`` reads that
file without importing ``open_clip`` (whose import needs torchvision) and rebuilds the 49,408-token
vocabulary exactly as OpenAI's tokenizer does (256 byte symbols, their end-of-word forms, 48,894
merges, start/end tokens) into a transformers ``CLIPTokenizer``. ``save_pretrained`` of that
tokenizer writes ``tokenizer.json`` so a checkpoint directory is self-contained afterwards.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

from .edm import dpm_solver_1_sample, edm_scalings, exponential_sigma_schedule, randn

__all__ = [
    "TVPConfig",
    "TextConditioning",
    "TextConditionWidener",
    "UNetInputs",
    "TextGuidedVideoPredictor",
    "build_offline_clip_tokenizer",
    "sincos_position_encoding",
    "svd_unet_config",
    "svd_vae_config",
    "clip_text_config",
]

PathLike = Union[str, Path]

_INTERPOLATION_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
# Config keys that record provenance, not architecture; dropped so configs compare and serialise cleanly.
_PROVENANCE_KEYS = ("transformers_version", "architectures", "_name_or_path", "_commit_hash", "dtype", "torch_dtype")


# --------------------------------------------------------------------------- reference configs
def svd_unet_config(**overrides: Any) -> dict[str, Any]:
    """Stable Video Diffusion's UNet config (1.52 B params) with ``sample_size=96`` set.

    diffusers' default leaves ``sample_size`` None; SVD's released config has 96 (768 px / 8).
    """
    config: dict[str, Any] = dict(
        sample_size=96,
        in_channels=8,
        out_channels=4,
        down_block_types=[
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "CrossAttnDownBlockSpatioTemporal",
            "DownBlockSpatioTemporal",
        ],
        up_block_types=[
            "UpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
            "CrossAttnUpBlockSpatioTemporal",
        ],
        block_out_channels=[320, 640, 1280, 1280],
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=768,
        layers_per_block=2,
        cross_attention_dim=1024,
        transformer_layers_per_block=1,
        num_attention_heads=[5, 10, 20, 20],
        num_frames=25,
    )
    config.update(overrides)
    return config


def svd_vae_config(**overrides: Any) -> dict[str, Any]:
    """SVD's ``AutoencoderKLTemporalDecoder`` config (8x down-sampling, 4 latent channels)."""
    config: dict[str, Any] = dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
        scaling_factor=0.18215,
        force_upcast=True,
    )
    config.update(overrides)
    return config


def clip_text_config(**overrides: Any) -> dict[str, Any]:
    """clip-vit-base-patch32's text tower (512-d, 12 layers, 512-d projection)."""
    config: dict[str, Any] = dict(
        vocab_size=49408,
        hidden_size=512,
        intermediate_size=2048,
        projection_dim=512,
        num_hidden_layers=12,
        num_attention_heads=8,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    config.update(overrides)
    return config


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _diffusers_config_dict(module: Any) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in dict(module.config).items() if not k.startswith("_")}


def _text_config_dict(config: CLIPTextConfig) -> dict[str, Any]:
    data = config.to_dict()
    for key in _PROVENANCE_KEYS:
        data.pop(key, None)
    for key in ("id2label", "label2id"):
        data.pop(key, None)
    return _jsonable(data)


# --------------------------------------------------------------------------- config
@dataclass
class TVPConfig:
    """Architecture (sub-model configs) and feature-extraction settings of the TVP.

    ``unet`` / ``vae`` / ``text_encoder`` are the diffusers / transformers config dicts; they fully
    rebuild the networks. The remaining fields are VPP's own settings:

    - ``image_size``: square input resolution (256 in the paper; latent = image_size / 8).
    - ``num_frames``: predicted video length T (16).
    - ``max_text_tokens``: CLIP context length used (20, as the reference).
    - ``text_position_encoding``: add the reference's fixed sin-cos code to the CLIP states.
    - ``feature_blocks``: indices of ``unet.up_blocks`` whose outputs form the features.
    - ``feature_interpolation``: how smaller maps are resized to the largest chosen map
      ("nearest" is what the reference's ``F.interpolate(scale_factor=...)`` does).
    - ``feature_sigma``: EDM noise level of the one-step forward (700 = SVD's sigma_max).
    - ``feature_noise_seed``: seed of the FIXED noise used for features (see ``features``).
    - ``fps_id`` / ``motion_bucket_id`` / ``noise_aug_strength``: SVD's added time ids. The
      reference extracts features with fps 4, motion bucket 127, no noise augmentation (and
      trains the video model with fps 7); whatever is chosen must be the same in stage-2 training
      and at rollout, which this single setting guarantees.
    - ``scale_condition_latents``: see the module docstring (False = SVD / reference convention).
    - ``video_*``: sigma range and step count of ``predict_video``.
    """

    unet: dict[str, Any] = field(default_factory=svd_unet_config)
    vae: dict[str, Any] = field(default_factory=svd_vae_config)
    text_encoder: dict[str, Any] = field(default_factory=clip_text_config)
    image_size: int = 256
    num_frames: int = 16
    max_text_tokens: int = 20
    text_position_encoding: bool = True
    feature_blocks: tuple[int, ...] = (0, 1)
    feature_interpolation: str = "nearest"
    feature_sigma: float = 700.0
    feature_noise_seed: int = 0
    fps_id: int = 4
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.0
    scale_condition_latents: bool = False
    video_sigma_min: float = 0.002
    video_sigma_max: float = 700.0
    video_sampling_steps: int = 25

    def __post_init__(self) -> None:
        self.unet = _jsonable(dict(self.unet))
        self.vae = _jsonable(dict(self.vae))
        self.text_encoder = _jsonable(dict(self.text_encoder))
        self.feature_blocks = tuple(int(b) for b in self.feature_blocks)
        num_up = len(self.unet.get("up_block_types", svd_unet_config()["up_block_types"]))
        if not self.feature_blocks:
            raise ValueError("TVPConfig.feature_blocks must name at least one up block")
        if list(self.feature_blocks) != sorted(set(self.feature_blocks)):
            raise ValueError(f"TVPConfig.feature_blocks must be strictly increasing, got {self.feature_blocks}")
        if self.feature_blocks[0] < 0 or self.feature_blocks[-1] >= num_up:
            raise ValueError(f"TVPConfig.feature_blocks must lie in [0, {num_up - 1}], got {self.feature_blocks}")
        if self.feature_interpolation not in _INTERPOLATION_MODES:
            raise ValueError(f"feature_interpolation must be one of {_INTERPOLATION_MODES}, got {self.feature_interpolation!r}")
        for name in ("image_size", "num_frames", "max_text_tokens", "video_sampling_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TVPConfig.{name} must be a positive int, got {value!r}")
        if not (0 < self.feature_sigma < math.inf):
            raise ValueError(f"TVPConfig.feature_sigma must be finite and > 0, got {self.feature_sigma}")
        if not (0 < self.video_sigma_min < self.video_sigma_max < math.inf):
            raise ValueError("need 0 < video_sigma_min < video_sigma_max < inf")
        if self.noise_aug_strength < 0:
            raise ValueError("TVPConfig.noise_aug_strength must be >= 0")
        if self.image_size % self.vae_scale_factor:
            raise ValueError(f"image_size {self.image_size} must be a multiple of the VAE factor {self.vae_scale_factor}")
        # The truncated forward and the feature-size arithmetic assume every down-sampling halves
        # the latent exactly (true for SVD at 256 px: 32 -> 16 -> 8 -> 4).
        bottom = 2 ** (len(self.unet.get("block_out_channels", [0] * 4)) - 1)
        if self.latent_size % bottom:
            raise ValueError(f"latent size {self.latent_size} must be a multiple of the UNet's down-sampling {bottom}")
        text_tokens_limit = int(self.text_encoder.get("max_position_embeddings", 77))
        if self.max_text_tokens > text_tokens_limit:
            raise ValueError(f"max_text_tokens {self.max_text_tokens} exceeds the text encoder's {text_tokens_limit} positions")
        in_channels = int(self.unet.get("in_channels", 8))
        out_channels = int(self.unet.get("out_channels", 4))
        if in_channels != 2 * out_channels or out_channels != int(self.vae.get("latent_channels", 4)):
            raise ValueError(
                f"UNet in_channels ({in_channels}) must be 2 x out_channels ({out_channels}) = 2 x VAE latent channels"
            )
        add_dim = int(self.unet.get("addition_time_embed_dim", 256))
        if int(self.unet.get("projection_class_embeddings_input_dim", 768)) != 3 * add_dim:
            raise ValueError("UNet projection_class_embeddings_input_dim must be 3 x addition_time_embed_dim (3 time ids)")

    # ---- derived sizes
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.get("block_out_channels", [0] * 4)) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return int(self.unet.get("out_channels", 4))

    @property
    def cross_attention_dim(self) -> int:
        value = self.unet.get("cross_attention_dim", 1024)
        widths = set(value) if isinstance(value, list) else {value}
        if len(widths) != 1:
            raise ValueError(f"per-block cross_attention_dim {value} is not supported: one text width feeds every block")
        return int(widths.pop())

    @property
    def text_hidden_dim(self) -> int:
        return int(self.text_encoder.get("hidden_size", 512))

    @property
    def text_embed_dim(self) -> int:
        """Width of the pooled, projected CLIP embedding (the action head's ``lang_dim``)."""
        return int(self.text_encoder.get("projection_dim", 512))

    def up_block_channels(self, index: int) -> int:
        return int(list(reversed(self.unet.get("block_out_channels", [320, 640, 1280, 1280])))[index])

    def up_block_size(self, index: int) -> int:
        """Spatial size of ``up_blocks[index]``'s output (every block but the last up-samples x2)."""
        levels = len(self.unet.get("block_out_channels", [0] * 4))
        return self.latent_size * 2 ** min(index + 1, levels - 1) // 2 ** (levels - 1)

    @property
    def feature_channels(self) -> int:
        return sum(self.up_block_channels(i) for i in self.feature_blocks)

    @property
    def feature_size(self) -> int:
        """Side of the concatenated feature map: the largest chosen block's."""
        return max(self.up_block_size(i) for i in self.feature_blocks)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TVPConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TVPConfig keys: {unknown}")
        return cls(**dict(data))


# --------------------------------------------------------------------------- text
def sincos_position_encoding(length: int, dim: int, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Fixed 1-D sin-cos position code [length, dim]: first half sin, second half cos.

    Frequencies 1 / 10000^(2k/dim); the same code the reference adds to CLIP's hidden states.
    """
    if dim % 2:
        raise ValueError(f"sin-cos position encoding needs an even width, got {dim}")
    half = dim // 2
    omega = 1.0 / 10000.0 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).to(device=device, dtype=dtype)


class TextConditionWidener(nn.Module):
    """Widens per-token text states [B, L, in_dim] to the UNet's cross-attention width out_dim.

    Parameter-free on purpose: the reference widens CLIP's 512-d states to SVD's 1024-d by
    concatenating them with themselves, and released TVP weights were trained on exactly that, so
    a learned projection would break loading them without conversion. For any width we tile the
    states ceil(out/in) times and cut at out_dim: that is the reference's concatenation when
    out = 2 * in, the identity when out = in, and otherwise still passes every channel through
    unchanged (no random projection that would need training to undo).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"widths must be positive, got {in_dim} -> {out_dim}")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.repeats = -(-out_dim // in_dim)

    def forward(self, states: Tensor) -> Tensor:
        if states.shape[-1] != self.in_dim:
            raise ValueError(f"expected text states of width {self.in_dim}, got {tuple(states.shape)}")
        if self.repeats == 1 and self.out_dim == self.in_dim:
            return states
        return states.repeat(*([1] * (states.ndim - 1)), self.repeats)[..., : self.out_dim]

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim} (tiled x{self.repeats})"


@dataclass
class TextConditioning:
    """Encoded instructions: UNet cross-attention states and the pooled CLIP embedding."""

    hidden_states: Tensor  # [B, L, cross_attention_dim]
    pooled: Tensor  # [B, text_embed_dim]

    def to(self, device: Any = None, dtype: Optional[torch.dtype] = None) -> "TextConditioning":
        return TextConditioning(self.hidden_states.to(device=device, dtype=dtype), self.pooled.to(device=device, dtype=dtype))

    @property
    def batch_size(self) -> int:
        return int(self.hidden_states.shape[0])


def _open_clip_bpe_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "building a CLIP tokenizer offline needs CLIP's BPE file from the open-clip-torch wheel: "
            "run `pip install --no-deps open-clip-torch`, or load a tokenizer directory instead"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    raise RuntimeError("open_clip is installed but bpe_simple_vocab_16e6.txt.gz was not found in it")


def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP byte -> printable-unicode table, in byte order (256 symbols)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    # OpenAI's vocabulary lists the printable bytes first, then the remapped ones.
    ordered = printable + [b for b in range(256) if b not in printable]
    return [symbols[b] for b in ordered]


def build_offline_clip_tokenizer(bpe_path: Optional[PathLike] = None, model_max_length: int = 77) -> CLIPTokenizer:
    """CLIP's exact BPE tokenizer from the BPE merge file shipped in open-clip-torch (no hub access).

    The vocabulary is rebuilt the way OpenAI's ``SimpleTokenizer`` builds it: 256 byte symbols,
    the same with the end-of-word mark ``</w>``, one token per merge (the first 49152 - 256 - 2
    lines after the header), then ``<|startoftext|>`` and ``<|endoftext|>`` (ids 49406, 49407).
    """
    path = Path(bpe_path) if bpe_path is not None else _open_clip_bpe_path()
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merge_lines = lines[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in merge_lines]
    if any(len(m) != 2 for m in merges):
        raise RuntimeError(f"{path} is not a CLIP BPE merge file")
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise RuntimeError("duplicate tokens while rebuilding the CLIP vocabulary")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


# --------------------------------------------------------------------------- model
@dataclass
class UNetInputs:
    """Everything one UNet call needs; N = batch * views."""

    sample: Tensor  # [N, T, 2 * latent_channels, h, w]: c_in * noisy latents ++ conditioning latents
    timestep: Tensor  # [N]: EDM c_noise = ln(sigma) / 4
    encoder_hidden_states: Tensor  # [N, L, cross_attention_dim]
    added_time_ids: Tensor  # [N, 3]: fps, motion bucket, noise augmentation


class TextGuidedVideoPredictor(nn.Module):
    """SVD UNet + temporal VAE + CLIP text encoder, with VPP's one-step predictive features."""

    def __init__(
        self,
        config: TVPConfig,
        unet: Optional[UNetSpatioTemporalConditionModel] = None,
        vae: Optional[AutoencoderKLTemporalDecoder] = None,
        text_encoder: Optional[CLIPTextModelWithProjection] = None,
        tokenizer: Optional[CLIPTokenizer] = None,
    ) -> None:
        super().__init__()
        self.unet = unet if unet is not None else UNetSpatioTemporalConditionModel.from_config(config.unet)
        self.vae = vae if vae is not None else AutoencoderKLTemporalDecoder.from_config(config.vae)
        self.text_encoder = (
            text_encoder
            if text_encoder is not None
            else CLIPTextModelWithProjection(CLIPTextConfig.from_dict(config.text_encoder))
        )
        # The config always describes the networks actually held, so saving it rebuilds them.
        self.config = replace(
            config,
            unet=_diffusers_config_dict(self.unet),
            vae=_diffusers_config_dict(self.vae),
            text_encoder=_text_config_dict(self.text_encoder.config),
        )
        config = self.config
        self.tokenizer = tokenizer if tokenizer is not None else build_offline_clip_tokenizer()
        if len(self.tokenizer) > self.text_encoder.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(self.tokenizer)} tokens but the text encoder only {self.text_encoder.config.vocab_size}"
            )
        self.text_widener = TextConditionWidener(config.text_hidden_dim, config.cross_attention_dim)
        # Per (device, dtype) constants: the fixed feature noise and the added time ids.
        self._constant_cache: dict[tuple[Any, ...], Tensor] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        video_model_dir: PathLike,
        text_encoder_dir: PathLike,
        vae_dir: Optional[PathLike] = None,
        tokenizer_dir: Optional[PathLike] = None,
        **config_overrides: Any,
    ) -> "TextGuidedVideoPredictor":
        """Load released weights from local directories (see the module docstring); no download.

        ``video_model_dir`` is either an SVD pipeline directory (with ``unet/`` and ``vae/``) or a
        bare diffusers UNet directory, in which case ``vae_dir`` is required. ``text_encoder_dir``
        is a transformers CLIP (text or full) directory; its tokenizer files are used unless
        ``tokenizer_dir`` is given. ``config_overrides`` set ``TVPConfig`` fields.
        """
        root = Path(video_model_dir)
        if (root / "unet" / "config.json").is_file():
            unet_dir = root / "unet"
            vae_path = Path(vae_dir) if vae_dir is not None else root / "vae"
        else:
            unet_dir = root
            if vae_dir is None:
                raise ValueError(f"{root} is a bare UNet directory: pass vae_dir= (SVD's vae/ folder)")
            vae_path = Path(vae_dir)
        for path, what in ((unet_dir, "UNet"), (vae_path, "VAE"), (Path(text_encoder_dir), "text encoder")):
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no {what} config.json in {path}")
        unet = UNetSpatioTemporalConditionModel.from_pretrained(unet_dir, local_files_only=True)
        vae = AutoencoderKLTemporalDecoder.from_pretrained(vae_path, local_files_only=True)
        text_encoder = CLIPTextModelWithProjection.from_pretrained(text_encoder_dir, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir or text_encoder_dir, local_files_only=True)
        config = TVPConfig(
            unet=_diffusers_config_dict(unet),
            vae=_diffusers_config_dict(vae),
            text_encoder=_text_config_dict(text_encoder.config),
            **config_overrides,
        )
        return cls(config, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device

    # ------------------------------------------------------------------ text
    def tokenize(self, instructions: Sequence[str]) -> dict[str, Tensor]:
        """Token ids / attention mask [B, max_text_tokens] (padded with end-of-text, truncated)."""
        if isinstance(instructions, str):
            raise TypeError("instructions must be a sequence of strings, not one string")
        texts = list(instructions)
        if not texts:
            raise ValueError("no instructions given")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"instruction {index} is {type(text).__name__}, not str")
        encoded = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.config.max_text_tokens,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def encode_text(self, instructions: Sequence[str]) -> TextConditioning:
        """CLIP-encode instructions -> UNet cross-attention states and pooled embedding."""
        tokens = self.tokenize(instructions)
        device = self.text_encoder.text_projection.weight.device
        outputs = self.text_encoder(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        states = outputs.last_hidden_state
        if self.config.text_position_encoding:
            states = states + sincos_position_encoding(states.shape[1], states.shape[2], states.device, states.dtype)
        return TextConditioning(hidden_states=self.text_widener(states), pooled=outputs.text_embeds)

    # ------------------------------------------------------------------ images
    def _check_images(self, images: Tensor) -> tuple[int, int]:
        size = self.config.image_size
        if images.ndim != 5 or images.shape[2] != 3 or images.shape[3:] != (size, size):
            raise ValueError(f"images must be [B, V, 3, {size}, {size}] in [-1, 1], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a float tensor in [-1, 1], got {images.dtype}")
        return int(images.shape[0]), int(images.shape[1])

    def set_latent_scaling(self, scaling_factor: float, scale_condition_latents: bool) -> None:
        """Set the VAE's latent scaling factor (and whether conditioning latents are scaled too).

        For a VAE that did not come with one (a random VAE has latents of std ~0.2, not SD's ~5.5
        that 0.18215 was derived for). Stored in the VAE's own config and in ``self.config``, so
        ``save_tvp`` / ``load_tvp`` keep it; features change, so do it before anything is cached.
        """
        if not (0.0 < scaling_factor < math.inf):
            raise ValueError(f"scaling_factor must be finite and > 0, got {scaling_factor}")
        self.vae.register_to_config(scaling_factor=float(scaling_factor))
        self.config = replace(
            self.config, vae=_diffusers_config_dict(self.vae), scale_condition_latents=bool(scale_condition_latents)
        )

    def encode_images(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Conditioning latents [N, C, h, w] of images [N, 3, H, W] in [-1, 1] (VAE posterior mode).

        With ``noise_aug_strength > 0`` the image is noised first (SVD's augmentation), drawing
        from ``generator``.
        """
        vae = self.vae
        pixels = images.to(device=vae.quant_conv.weight.device, dtype=vae.quant_conv.weight.dtype)
        strength = self.config.noise_aug_strength
        if strength > 0:
            pixels = pixels + strength * randn(pixels.shape, generator, pixels.device, pixels.dtype)
        device_type = pixels.device.type
        # fp16 overflows in SVD's VAE encoder (its config says force_upcast): run it in the fp32
        # weights' precision when an fp16 autocast region is active. bf16 has fp32's range: keep it.
        upcast = (
            bool(vae.config.force_upcast)
            and device_type == "cuda"
            and torch.is_autocast_enabled(device_type)
            and torch.get_autocast_dtype(device_type) == torch.float16
        )
        with torch.autocast(device_type, enabled=False) if upcast else nullcontext():
            latents = vae.encode(pixels.float() if upcast else pixels).latent_dist.mode()
        return self.condition_from_latents(latents)

    def condition_from_latents(self, latents: Tensor) -> Tensor:
        """Conditioning latents from unscaled VAE posterior-mode latents (scaled only if configured).

        The one place that decides the conditioning scale: stage 1's cached latents and
        ``encode_images`` both go through it, so training and feature extraction agree.
        """
        if self.config.scale_condition_latents:
            return latents * self.vae.config.scaling_factor
        return latents

    # ------------------------------------------------------------------ UNet plumbing
    def added_time_ids(self, count: int, fps_id: Optional[int] = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """SVD's added time ids [count, 3] = (fps, motion bucket, noise augmentation strength)."""
        cfg = self.config
        values = (float(cfg.fps_id if fps_id is None else fps_id), float(cfg.motion_bucket_id), float(cfg.noise_aug_strength))
        key = (str(self.device), dtype, values)
        ids = self._constant_cache.get(key)
        if ids is None:
            # Cached on the device: a host-to-device copy per call would also break CUDA graph capture.
            ids = torch.tensor(values, dtype=dtype).to(self.device)
            self._constant_cache[key] = ids
        return ids.expand(count, 3)

    def _feature_noise(self, count: int, device: torch.device, dtype: torch.dtype, generator: Optional[torch.Generator]) -> Tensor:
        cfg = self.config
        shape = (cfg.num_frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        if generator is not None:
            return randn((count, *shape), generator, device, dtype)
        key = ("feature_noise", str(device), dtype)
        noise = self._constant_cache.get(key)
        if noise is None:
            # Drawn once on the CPU from a fixed seed, so features are identical on every device,
            # for every batch size and batch position.
            cpu_generator = torch.Generator("cpu").manual_seed(cfg.feature_noise_seed)
            noise = torch.randn((1, *shape), generator=cpu_generator).to(device=device, dtype=dtype)
            self._constant_cache[key] = noise
        return noise.expand(count, *shape)

    def prepare_feature_inputs(
        self, images: Tensor, text_hidden: Tensor, generator: Optional[torch.Generator] = None
    ) -> UNetInputs:
        """UNet inputs of the one-step feature forward for images [B, V, 3, H, W] and text [B, L, D].

        All views go through as one batch of N = B * V clips (batch-major: row b * V + v).
        """
        batch, views = self._check_images(images)
        cfg = self.config
        if text_hidden.ndim != 3 or text_hidden.shape[0] != batch or text_hidden.shape[2] != cfg.cross_attention_dim:
            raise ValueError(
                f"text_hidden must be [{batch}, L, {cfg.cross_attention_dim}] (TextConditioning.hidden_states), "
                f"got {tuple(text_hidden.shape)}"
            )
        count = batch * views
        dtype = self.unet.conv_in.weight.dtype
        device = self.device
        condition = self.encode_images(images.reshape(count, *images.shape[2:]), generator).to(dtype)
        condition = condition.unsqueeze(1).expand(count, cfg.num_frames, *condition.shape[1:])
        sigma = torch.full((count,), cfg.feature_sigma, device=device, dtype=torch.float32)
        scalings = edm_scalings(sigma, sigma_data=1.0, validate=False)
        # The noisy latent at sigma 700 is sigma * noise (any clean content is ~0.1 % of it), so
        # the UNet input c_in * x is just the unit noise scaled by sigma / sqrt(sigma^2 + 1).
        noise = self._feature_noise(count, device, torch.float32, generator)
        noisy_input = (noise * (cfg.feature_sigma * scalings.c_in.view(-1, 1, 1, 1, 1))).to(dtype)
        return UNetInputs(
            sample=torch.cat([noisy_input, condition], dim=2),
            timestep=scalings.c_noise,
            encoder_hidden_states=text_hidden.to(device=device, dtype=dtype).repeat_interleave(views, dim=0),
            added_time_ids=self.added_time_ids(count, dtype=dtype),
        )

    def run_up_blocks(self, inputs: UNetInputs, last_block: int) -> list[Tensor]:
        """The UNet forward up to and including ``up_blocks[last_block]``; returns every up block's output.

        Mirrors diffusers 0.42 ``UNetSpatioTemporalConditionModel.forward`` step by step (time
        embedding, added-time embedding, frame flattening, conv_in, down blocks, mid block, up
        blocks) and simply stops early. Outputs are [N * T, C_i, h_i, w_i].
        """
        unet = self.unet
        if not 0 <= last_block < len(unet.up_blocks):
            raise ValueError(f"last_block must be in [0, {len(unet.up_blocks) - 1}], got {last_block}")
        sample = inputs.sample
        batch_size, num_frames = sample.shape[:2]
        overall_up_factor = 2**unet.num_upsamplers
        forward_upsample_size = any(s % overall_up_factor != 0 for s in sample.shape[-2:])
        upsample_size = None

        timesteps = inputs.timestep.to(sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch_size)
        emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=sample.dtype))
        time_embeds = unet.add_time_proj(inputs.added_time_ids.flatten()).reshape(batch_size, -1).to(emb.dtype)
        emb = emb + unet.add_embedding(time_embeds)

        sample = sample.flatten(0, 1)
        emb = emb.repeat_interleave(num_frames, dim=0)
        encoder_hidden_states = inputs.encoder_hidden_states.repeat_interleave(num_frames, dim=0)
        sample = unet.conv_in(sample)
        image_only_indicator = torch.zeros(batch_size, num_frames, dtype=sample.dtype, device=sample.device)

        residuals: tuple[Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, block_residuals = block(
                    hidden_states=sample,
                    temb=emb,
                    encoder_hidden_states=encoder_hidden_states,
                    image_only_indicator=image_only_indicator,
                )
            else:
                sample, block_residuals = block(hidden_states=sample, temb=emb, image_only_indicator=image_only_indicator)
            residuals += block_residuals

        sample = unet.mid_block(
            hidden_states=sample,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            image_only_indicator=image_only_indicator,
        )

        outputs: list[Tensor] = []
        for index, block in enumerate(unet.up_blocks[: last_block + 1]):
            is_final_block = index == len(unet.up_blocks) - 1
            block_residuals = residuals[-len(block.resnets) :]
            residuals = residuals[: -len(block.resnets)]
            if not is_final_block and forward_upsample_size:
                upsample_size = residuals[-1].shape[2:]
            if getattr(block, "has_cross_attention", False):
                sample = block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=block_residuals,
                    encoder_hidden_states=encoder_hidden_states,
                    upsample_size=upsample_size,
                    image_only_indicator=image_only_indicator,
                )
            else:
                sample = block(
                    hidden_states=sample,
                    temb=emb,
                    res_hidden_states_tuple=block_residuals,
                    upsample_size=upsample_size,
                    image_only_indicator=image_only_indicator,
                )
            outputs.append(sample)
        return outputs

    def aggregate_features(self, block_outputs: Sequence[Tensor], batch: int, views: int) -> Tensor:
        """Resize the chosen up-block outputs to the largest one, concatenate -> [B, V, T, C, h, w]."""
        cfg = self.config
        chosen = [block_outputs[i] for i in cfg.feature_blocks]
        height = max(t.shape[-2] for t in chosen)
        width = max(t.shape[-1] for t in chosen)
        resized = []
        for tensor in chosen:
            if tensor.shape[-2:] != (height, width):
                kwargs = {"align_corners": False} if cfg.feature_interpolation in ("bilinear", "bicubic") else {}
                tensor = F.interpolate(tensor, size=(height, width), mode=cfg.feature_interpolation, **kwargs)
            resized.append(tensor)
        merged = torch.cat(resized, dim=1) if len(resized) > 1 else resized[0]
        return merged.reshape(batch, views, cfg.num_frames, merged.shape[1], height, width)

    def features(self, images: Tensor, text_hidden: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """One-step predictive features [B, V, T, C, h, w] of images [B, V, 3, H, W] in [-1, 1].

        ``text_hidden`` is ``TextConditioning.hidden_states`` [B, L, cross_attention_dim].

        Noise: the reference draws fresh unseeded noise at every call, so its features (and thus
        its actions) change from call to call for the same observation. Here, without a
        ``generator``, the noise is one FIXED draw (seed ``feature_noise_seed``) shared by every
        sample: features are then a deterministic function of image and instruction, identical in
        stage-2 training and at rollout, on CPU and GPU, in any batch; plans are reproducible,
        testable and capturable in a CUDA graph; the action head's own sampling noise still
        carries the policy's stochasticity. Pass a ``generator`` to draw per-sample noise instead
        (e.g. as a training-time augmentation).
        """
        batch, views = self._check_images(images)
        inputs = self.prepare_feature_inputs(images, text_hidden, generator)
        outputs = self.run_up_blocks(inputs, last_block=self.config.feature_blocks[-1])
        return self.aggregate_features(outputs, batch, views)

    # ------------------------------------------------------------------ video prediction
    def denoise(
        self,
        noisy_latents: Tensor,
        sigma: Tensor,
        condition_latents: Tensor,
        text_hidden: Tensor,
        added_time_ids: Optional[Tensor] = None,
    ) -> Tensor:
        """EDM denoiser of the video latents: clean-latent estimate [N, T, C, h, w].

        SVD's UNet is a v-prediction network in EDM form with sigma_data = 1:
        D = c_skip x + c_out F(c_in x, ln(sigma)/4) with c_out = -sigma / sqrt(sigma^2 + 1)
        (EDM's c_out with the sign flipped, as the reference's training loss uses).
        ``condition_latents`` [N, C, h, w] come from ``encode_images``; ``sigma`` is [N].
        """
        count, frames = noisy_latents.shape[:2]
        dtype = self.unet.conv_in.weight.dtype
        scalings = edm_scalings(sigma.float(), sigma_data=1.0, validate=False)
        per_sample = (-1, 1, 1, 1, 1)
        condition = condition_latents.to(dtype).unsqueeze(1).expand(count, frames, *condition_latents.shape[1:])
        sample = torch.cat([(noisy_latents.float() * scalings.c_in.view(per_sample)).to(dtype), condition], dim=2)
        ids = added_time_ids if added_time_ids is not None else self.added_time_ids(count, dtype=dtype)
        raw = self.unet(sample, scalings.c_noise, encoder_hidden_states=text_hidden.to(dtype), added_time_ids=ids.to(dtype)).sample
        return scalings.c_skip.view(per_sample) * noisy_latents.float() - scalings.c_out.view(per_sample) * raw.float()

    @torch.no_grad()
    def predict_video(
        self,
        images: Tensor,
        text_hidden: Tensor,
        steps: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        guidance_scale: float = 1.0,
        fps_id: Optional[int] = None,
    ) -> Tensor:
        """Predict T frames per view: [B, V, T, 3, H, W] in [-1, 1] (full multi-step sampling).

        DPM-Solver-1 (= DDIM) over an exponential sigma schedule from ``video_sigma_max`` to
        ``video_sigma_min`` (``steps`` denoiser calls, default ``video_sampling_steps``), then
        the temporal VAE decodes each clip. ``guidance_scale`` > 1 applies classifier-free
        guidance against all-zero text states (the reference drops language to zeros 5 % of the
        time while fine-tuning). ``fps_id`` overrides the config's (the reference fine-tunes at 7).
        """
        batch, views = self._check_images(images)
        cfg = self.config
        count = batch * views
        num_steps = cfg.video_sampling_steps if steps is None else int(steps)
        dtype = self.unet.conv_in.weight.dtype
        condition = self.encode_images(images.reshape(count, *images.shape[2:]), generator)
        text = text_hidden.to(self.device).repeat_interleave(views, dim=0)
        ids = self.added_time_ids(count, fps_id=fps_id, dtype=dtype)
        guided = guidance_scale != 1.0
        if guided:
            condition_in = torch.cat([condition, condition])
            text_in = torch.cat([text, torch.zeros_like(text)])
            ids_in = torch.cat([ids, ids])
        else:
            condition_in, text_in, ids_in = condition, text, ids

        def denoiser(latents: Tensor, sigma: Tensor) -> Tensor:
            if not guided:
                return self.denoise(latents, sigma, condition_in, text_in, ids_in)
            both = self.denoise(torch.cat([latents, latents]), torch.cat([sigma, sigma]), condition_in, text_in, ids_in)
            conditional, unconditional = both.chunk(2)
            return unconditional + guidance_scale * (conditional - unconditional)

        sigmas = exponential_sigma_schedule(num_steps, cfg.video_sigma_min, cfg.video_sigma_max, dtype=torch.float64)
        shape = (count, cfg.num_frames, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
        latents = randn(shape, generator, self.device, torch.float32) * float(sigmas[0])
        latents = dpm_solver_1_sample(denoiser, latents, sigmas.float())

        vae_dtype = self.vae.quant_conv.weight.dtype
        frames = []
        for clip in latents:
            decoded = self.vae.decode((clip / self.vae.config.scaling_factor).to(vae_dtype), num_frames=cfg.num_frames).sample
            frames.append(decoded.float().clamp(-1.0, 1.0))
        size = cfg.image_size
        return torch.stack(frames).reshape(batch, views, cfg.num_frames, 3, size, size)
