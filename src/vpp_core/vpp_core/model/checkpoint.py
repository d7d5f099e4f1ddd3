"""VPP policy checkpoint directories: everything needed to rebuild and run a policy, offline.

Layout of a checkpoint directory::

    config.json          {"format": "vpp-policy", "format_version": 1, "policy": VPPPolicyConfig.to_dict(),
                          "metadata": {...}}
    model.safetensors    every tensor of ``policy.state_dict()`` (TVP, Video Former, action head)
    normalization.json   {"actions": PercentileNormalizer.to_dict(), "proprio": ...}
    tokenizer/           the CLIP tokenizer (``save_pretrained``), so loading needs no open-clip
                         vocabulary and no hub

Loading rebuilds the architecture from ``config.json``, then checks the weight file against it
tensor by tensor and raises ``CheckpointError`` naming every missing, unexpected or wrong-shaped
tensor before anything is loaded. Files are written to a temporary name and renamed, so a crash
mid-save never leaves a half-written checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from .normalization import PercentileNormalizer
from .policy import VPPPolicy, VPPPolicyConfig
from .tvp import TextGuidedVideoPredictor

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "LoadedCheckpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_config",
]

CHECKPOINT_FORMAT = "vpp-policy"
CHECKPOINT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_FILE = "normalization.json"
TOKENIZER_DIR = "tokenizer"

PathLike = Union[str, Path]


class CheckpointError(ValueError):
    """A checkpoint directory is malformed or does not match the architecture it declares."""


@dataclass
class LoadedCheckpoint:
    """A policy rebuilt from disk with its normalisers and free-form metadata."""

    policy: VPPPolicy
    normalizers: dict[str, PercentileNormalizer]
    metadata: dict[str, Any] = field(default_factory=dict)
    directory: Optional[Path] = None


def _check_normalizers(policy: VPPPolicy, normalizers: Mapping[str, PercentileNormalizer]) -> None:
    expected = {"actions": policy.action_dim}
    if policy.proprio_dim > 0:
        expected["proprio"] = policy.proprio_dim
    missing = sorted(set(expected) - set(normalizers))
    if missing:
        raise CheckpointError(f"normalizers missing for {missing} (needed: {sorted(expected)})")
    for name, dim in expected.items():
        normalizer = normalizers[name]
        if not isinstance(normalizer, PercentileNormalizer):
            raise CheckpointError(f"normalizer '{name}' is {type(normalizer).__name__}, not PercentileNormalizer")
        if normalizer.dim != dim:
            raise CheckpointError(f"normalizer '{name}' has {normalizer.dim} dims, the policy {dim}")


def _write_atomically(path: Path, write: Any) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def save_checkpoint(
    policy: VPPPolicy,
    directory: PathLike,
    normalizers: Mapping[str, PercentileNormalizer],
    metadata: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write ``policy`` + ``normalizers`` ("actions", and "proprio" when the policy has proprio).

    ``metadata`` (JSON-serialisable: preset name, training step, data set...) is stored in
    config.json. Returns the directory.
    """
    _check_normalizers(policy, normalizers)
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)

    # safetensors refuses tensors that share memory; clone any alias so every entry owns its data.
    tensors: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in policy.state_dict().items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        tensor = tensor.clone() if storage in seen_storages else tensor.contiguous()
        seen_storages.add(storage)
        tensors[name] = tensor
    _write_atomically(root / WEIGHTS_FILE, lambda path: save_file(tensors, path, metadata={"format": CHECKPOINT_FORMAT}))

    normalization = {name: normalizer.to_dict() for name, normalizer in normalizers.items()}
    _write_atomically(
        root / NORMALIZATION_FILE, lambda path: Path(path).write_text(json.dumps(normalization, indent=2))
    )

    tokenizer_dir = root / TOKENIZER_DIR
    staging = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=root))
    try:
        policy.tvp.tokenizer.save_pretrained(staging)
        if tokenizer_dir.exists():
            shutil.rmtree(tokenizer_dir)
        os.replace(staging, tokenizer_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)

    # config.json last: its presence marks a complete checkpoint.
    config = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "policy": policy.config.to_dict(),
        "metadata": dict(metadata or {}),
    }
    _write_atomically(root / CONFIG_FILE, lambda path: Path(path).write_text(json.dumps(config, indent=2)))
    return root


def read_checkpoint_config(directory: PathLike) -> tuple[VPPPolicyConfig, dict[str, Any]]:
    """Parse and validate config.json -> (policy config, metadata)."""
    root = Path(directory)
    path = root / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{root} is not a VPP checkpoint: no {CONFIG_FILE}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from error
    if data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: format is {data.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    if data.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {data.get('format_version')!r} is not supported (this code reads {CHECKPOINT_FORMAT_VERSION})"
        )
    try:
        config = VPPPolicyConfig.from_dict(data["policy"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid policy config: {error}") from error
    return config, dict(data.get("metadata", {}))


_OPTIONAL_TENSORS = (
    "video_former.feature_mean",
    "video_former.feature_std",
    "action_head.language_mean",
    "action_head.language_scale",
)


def _compare_tensors(expected: Mapping[str, torch.Tensor], path: Path, extra: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    with safe_open(str(path), framework="pt") as handle:
        stored = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    for name in _OPTIONAL_TENSORS:
        # Absent in old checkpoints, or upgraded by load_checkpoint (per-channel feature mean).
        if extra is not None and name in extra:
            stored[name] = tuple(extra[name].shape)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    mismatched = sorted(
        f"{name}: checkpoint {stored[name]} vs model {tuple(expected[name].shape)}"
        for name in set(expected) & set(stored)
        if stored[name] != tuple(expected[name].shape)
    )
    if missing or unexpected or mismatched:
        lines = [f"{path} does not match the architecture in its config.json:"]
        for title, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if names:
                lines.append(f"  {title} ({len(names)}):")
                lines.extend(f"    {name}" for name in names)
        raise CheckpointError("\n".join(lines))


def load_checkpoint(directory: PathLike, device: Union[str, torch.device] = "cpu") -> LoadedCheckpoint:
    """Rebuild the policy saved in ``directory`` on ``device`` (eval mode), with its normalisers."""
    root = Path(directory)
    config, metadata = read_checkpoint_config(root)
    for required in (WEIGHTS_FILE, NORMALIZATION_FILE):
        if not (root / required).is_file():
            raise CheckpointError(f"{root} is incomplete: no {required}")
    tokenizer_dir = root / TOKENIZER_DIR
    if not tokenizer_dir.is_dir():
        raise CheckpointError(f"{root} is incomplete: no {TOKENIZER_DIR}/ directory")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)

    policy = VPPPolicy(config, tvp=TextGuidedVideoPredictor(config.tvp, tokenizer=tokenizer))
    expected = policy.state_dict()
    state = load_file(str(root / WEIGHTS_FILE), device="cpu")
    # Checkpoints written before the feature / language standardisations existed lack their
    # statistics: they keep the identity defaults (exactly the old behaviour).
    for name in _OPTIONAL_TENSORS:
        if name not in state and name in expected:
            state[name] = expected[name]
    # Checkpoints written while the feature mean was per (frame, channel) [T, C]: broadcast it to
    # the per-element shape [V, T, C, h*w] (the same standardisation).
    mean_name = "video_former.feature_mean"
    if mean_name in expected and state[mean_name].ndim == 2 and tuple(state[mean_name].shape) == tuple(expected[mean_name].shape[1:3]):
        state[mean_name] = state[mean_name].view(1, *state[mean_name].shape, 1).expand(expected[mean_name].shape).contiguous()
    _compare_tensors(expected, root / WEIGHTS_FILE, extra=state)
    policy.load_state_dict(state, strict=True)
    policy.to(device).eval()

    try:
        raw_normalizers = json.loads((root / NORMALIZATION_FILE).read_text())
        normalizers = {name: PercentileNormalizer.from_dict(value) for name, value in raw_normalizers.items()}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{root / NORMALIZATION_FILE}: invalid normalisation statistics: {error}") from error
    _check_normalizers(policy, normalizers)
    return LoadedCheckpoint(policy=policy, normalizers=normalizers, metadata=metadata, directory=root)
