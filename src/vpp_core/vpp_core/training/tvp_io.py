"""TVP directories: what stage 1 writes and stage 2 / the preview load.

Layout (the same folders as a released SVD pipeline, so ``TextGuidedVideoPredictor.from_pretrained``
reads it without conversion)::

    <dir>/unet/            diffusers UNetSpatioTemporalConditionModel (config.json + safetensors)
    <dir>/vae/             diffusers AutoencoderKLTemporalDecoder
    <dir>/text_encoder/    transformers CLIPTextModelWithProjection + the CLIP tokenizer files
    <dir>/tvp_config.json  {"format": "vpp-tvp", "format_version": 1, "settings": VPP's TVPConfig
                            fields other than the three network configs (feature blocks, image
                            size, frames, time ids, ...), "metadata": {...}}

``tvp_config.json`` is written last and marks a complete directory. ``load_tvp`` also accepts a
released SVD pipeline directory (``unet/`` + ``vae/``, no ``tvp_config.json``) together with a CLIP
text-encoder directory, and a VPP policy checkpoint directory (its TVP part).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from ..model.tvp import TextGuidedVideoPredictor, TVPConfig

__all__ = ["TVP_FORMAT", "save_tvp", "load_tvp", "is_tvp_dir", "read_tvp_document", "tvp_settings", "tvp_fingerprint"]

TVP_FORMAT = "vpp-tvp"
TVP_FORMAT_VERSION = 1
TVP_CONFIG_FILE = "tvp_config.json"
_NETWORK_KEYS = ("unet", "vae", "text_encoder")

PathLike = Union[str, Path]


def tvp_settings(config: TVPConfig) -> dict[str, Any]:
    """VPP's own TVP settings (everything but the three network configs)."""
    return {key: value for key, value in config.to_dict().items() if key not in _NETWORK_KEYS}


def is_tvp_dir(directory: PathLike) -> bool:
    return (Path(directory) / TVP_CONFIG_FILE).is_file()


def save_tvp(tvp: TextGuidedVideoPredictor, directory: PathLike, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``tvp`` to ``directory`` (replacing a previous TVP there); returns the directory.

    The networks are written into a staging folder next to the target and moved into place, then
    ``tvp_config.json``: a crash mid-save never leaves a directory that looks complete.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tvp-staging.", dir=root))
    try:
        tvp.unet.save_pretrained(staging / "unet", safe_serialization=True)
        tvp.vae.save_pretrained(staging / "vae", safe_serialization=True)
        tvp.text_encoder.save_pretrained(staging / "text_encoder", safe_serialization=True)
        tvp.tokenizer.save_pretrained(staging / "text_encoder")
        marker = root / TVP_CONFIG_FILE
        if marker.exists():
            marker.unlink()
        for name in _NETWORK_KEYS:
            target = root / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    document = {
        "format": TVP_FORMAT,
        "format_version": TVP_FORMAT_VERSION,
        "settings": tvp_settings(tvp.config),
        "metadata": dict(metadata or {}),
    }
    handle, temporary = tempfile.mkstemp(prefix=".tvp_config.", dir=root)
    with os.fdopen(handle, "w") as stream:
        json.dump(document, stream, indent=2)
    os.replace(temporary, root / TVP_CONFIG_FILE)
    return root


def read_tvp_document(directory: PathLike) -> dict[str, Any]:
    path = Path(directory) / TVP_CONFIG_FILE
    document = json.loads(path.read_text())
    if document.get("format") != TVP_FORMAT:
        raise ValueError(f"{path}: format is {document.get('format')!r}, expected {TVP_FORMAT!r}")
    if document.get("format_version") != TVP_FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {document.get('format_version')!r} is not supported")
    return document


def load_tvp(
    directory: PathLike,
    text_encoder_dir: Optional[PathLike] = None,
    vae_dir: Optional[PathLike] = None,
    **overrides: Any,
) -> TextGuidedVideoPredictor:
    """Load a TVP from a directory written by ``save_tvp``, a released SVD pipeline directory
    (then ``text_encoder_dir`` is required) or a VPP policy checkpoint directory.

    ``overrides`` set ``TVPConfig`` fields (e.g. ``feature_blocks``) over the stored settings.
    """
    root = Path(directory)
    if is_tvp_dir(root):
        settings = dict(read_tvp_document(root)["settings"])
        settings.update(overrides)
        return TextGuidedVideoPredictor.from_pretrained(
            root, text_encoder_dir or root / "text_encoder", vae_dir=vae_dir, **settings
        )
    if (root / "config.json").is_file() and (root / "model.safetensors").is_file():
        from ..model.checkpoint import load_checkpoint

        loaded = load_checkpoint(root)
        if overrides:
            raise ValueError("TVPConfig overrides are not supported when loading the TVP of a policy checkpoint")
        return loaded.policy.tvp
    if text_encoder_dir is None:
        raise ValueError(
            f"{root} has no {TVP_CONFIG_FILE}: for a released SVD pipeline directory pass the CLIP text encoder directory too"
        )
    return TextGuidedVideoPredictor.from_pretrained(root, text_encoder_dir, vae_dir=vae_dir, **overrides)


def tvp_fingerprint(tvp: TextGuidedVideoPredictor) -> str:
    """SHA-256 over the TVP's settings and every weight tensor (bytes): a feature-cache key.

    Cost: one pass over the weights (~3 GB at full size, a few seconds); computed once per run.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(tvp.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(tvp.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(str(data.dtype).encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
