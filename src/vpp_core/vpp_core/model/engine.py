"""Inference engine: camera images + instruction (+ proprio) -> one denormalised action chunk.

``PolicyEngine.plan`` is what the policy node calls at every re-plan. It

- validates every input and raises ``ValueError`` / ``TypeError`` with a clear message for a
  missing or unexpected camera view, a wrong channel count or image size, an out-of-range or
  non-finite float image, an empty instruction, a missing / wrong-sized / NaN / Inf proprio
  vector; and ``RuntimeError`` if the network ever produces a non-finite action. Bad input never
  yields an action.
- Image size policy: images must already have the model's resolution (``policy.image_size``
  square). A wrong size is an error by default, because how a camera frame becomes a square
  model input (crop, pad or stretch) must match the training data pipeline and is the camera
  configuration's job. ``resize_images=True`` opts in to a bilinear, antialiased resize straight
  to ``image_size`` x ``image_size`` (a non-square frame is stretched, not cropped).
- caches the CLIP encoding per instruction (an LRU of ``text_cache_size`` entries), since the
  instruction rarely changes between re-plans;
- runs under ``torch.inference_mode``; with ``dtype="bf16"`` / ``"fp16"`` the frozen TVP's weights
  are cast to that dtype once (no per-call weight casts of 1.5 B parameters) and the whole plan
  runs under autocast, so the small Video Former and action head keep fp32 weights; SVD's VAE
  stays fp32 under fp16 (its config asks for upcasting; fp16 overflows there). bf16 also works
  on CPU; fp16 is CUDA-only;
- ``compile=True`` compiles the UNet blocks, VAE encoder, Video Former and action-head blocks
  with ``torch.compile`` (per module, so the per-stage timings stay meaningful);
- ``cuda_graphs=True`` (CUDA only) captures the whole plan after text encoding (features, Video
  Former, head encoder, all sampling steps) in one CUDA graph on the first call and replays it
  afterwards, removing the launch overhead of thousands of small kernels. Inside the graph the
  sampling noise comes from the CUDA default generator (graph-safe), seeded with ``seed``;
- is deterministic when seeded: the TVP feature noise is fixed (see ``TextGuidedVideoPredictor.
  features``) and the action-head noise comes from a generator seeded with ``seed``, so two
  engines with the same seed return the same sequence of plans (``reseed`` restarts it);
- records per-stage timings (``last_timings``, seconds) when ``profile=True``: stages are
  synchronised on CUDA, which costs a little latency, so leave it off in production.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..image import resize_pixels, uint8_to_pixels
from .normalization import PercentileNormalizer
from .policy import VPPPolicy
from .tvp import TextConditioning

__all__ = ["PolicyEngine", "DTYPES"]

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ImageInput = Union[np.ndarray, Tensor]


class PolicyEngine:
    """Runs a ``VPPPolicy`` for one robot: validated inputs in, denormalised action chunk out."""

    def __init__(
        self,
        policy: VPPPolicy,
        normalizers: Mapping[str, PercentileNormalizer],
        device: Union[str, torch.device] = "cpu",
        dtype: str = "fp32",
        compile: bool = False,
        cuda_graphs: bool = False,
        seed: Optional[int] = 0,
        resize_images: bool = False,
        profile: bool = False,
        text_cache_size: int = 32,
        sampling_steps: Optional[int] = None,
        samples_per_plan: int = 1,
    ) -> None:
        """Takes ownership of ``policy``: moves it to ``device``, sets eval mode, casts the TVP.

        ``samples_per_plan`` > 1 draws that many chunks for one observation (one batch through the
        action head's decoder; the TVP and Video Former run once) and returns their mean: the
        conditional mean of the chunk instead of one draw from it. Use it for a small policy whose
        samples are spread wide (sim proof, CPU preset: one sample's error was as large as always
        answering the mean chunk, the mean of 6 samples' ~25 % smaller); not for tasks where the
        demonstrations disagree (two ways around an obstacle), where a mean of modes is no mode.
        """
        self.device = torch.device(device)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        if dtype == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 is supported on CUDA only (use bf16 or fp32 on CPU)")
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs=True needs a CUDA device")
        if text_cache_size < 1:
            raise ValueError("text_cache_size must be >= 1")
        if not isinstance(samples_per_plan, int) or samples_per_plan < 1:
            raise ValueError(f"samples_per_plan must be an int >= 1, got {samples_per_plan!r}")
        self.samples_per_plan = samples_per_plan
        self.dtype_name = dtype
        self.compute_dtype = DTYPES[dtype]
        self.policy = policy
        self.normalizers = dict(normalizers)
        if "actions" not in self.normalizers or self.normalizers["actions"].dim != policy.action_dim:
            raise ValueError(f"normalizers need 'actions' with {policy.action_dim} dims")
        if policy.proprio_dim > 0 and (
            "proprio" not in self.normalizers or self.normalizers["proprio"].dim != policy.proprio_dim
        ):
            raise ValueError(f"normalizers need 'proprio' with {policy.proprio_dim} dims")
        self.resize_images = resize_images
        self.profile = profile
        self.sampling_steps = sampling_steps
        self.text_cache_size = text_cache_size
        self._text_cache: "OrderedDict[str, TextConditioning]" = OrderedDict()
        self.last_timings: dict[str, float] = {}
        self.last_text_cache_hit = False
        self._timings: dict[str, float] = {}
        self.seed = seed
        self._generator: Optional[torch.Generator] = None
        self.reseed(seed)
        #: The checkpoint's metadata (training provenance, proprio joint names); empty otherwise.
        self.metadata: dict[str, Any] = {}

        policy.to(self.device).eval()
        if self.compute_dtype != torch.float32:
            tvp = policy.tvp
            # nn.Module.to: diffusers' own .to() warns about casting, which is what we mean to do.
            torch.nn.Module.to(tvp.unet, self.compute_dtype)
            tvp.text_encoder.to(self.compute_dtype)
            if not (self.compute_dtype == torch.float16 and bool(tvp.vae.config.force_upcast)):
                torch.nn.Module.to(tvp.vae, self.compute_dtype)
        if compile:
            self._compile_modules()
        self.use_cuda_graphs = cuda_graphs
        self._graph: Optional[torch.cuda.CUDAGraph] = None
        self._static: dict[str, Tensor] = {}

    @classmethod
    def from_checkpoint(cls, directory: Union[str, Path], device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "PolicyEngine":
        """Load a checkpoint directory (see ``checkpoint.py``) and wrap it in an engine."""
        from .checkpoint import load_checkpoint

        loaded = load_checkpoint(directory, device="cpu")
        engine = cls(loaded.policy, loaded.normalizers, device=device, **kwargs)
        engine.metadata = dict(loaded.metadata)
        return engine

    # ------------------------------------------------------------------ setup helpers
    def reseed(self, seed: Optional[int]) -> None:
        """Restart the action-sampling noise sequence (``None``: unseeded, non-reproducible)."""
        self.seed = seed
        if seed is None:
            self._generator = None
            return
        self._generator = torch.Generator("cpu").manual_seed(int(seed))
        if self.device.type == "cuda":
            # The CUDA graph path draws from the default CUDA generator (graph-safe RNG).
            torch.cuda.manual_seed(int(seed))

    def _compile_modules(self) -> None:
        policy = self.policy
        unet = policy.tvp.unet
        last = policy.config.tvp.feature_blocks[-1]
        modules = [policy.tvp.vae.encoder, unet.mid_block, policy.video_former]
        modules += list(unet.down_blocks) + list(unet.up_blocks[: last + 1])
        modules += list(policy.action_head.encoder) + list(policy.action_head.decoder)
        for module in modules:
            module.compile(dynamic=False)

    def _autocast(self) -> Any:
        if self.compute_dtype == torch.float32:
            return nullcontext()
        # cache_enabled=False: autocast's weight-cast cache is not safe inside CUDA graph capture.
        return torch.autocast(self.device.type, dtype=self.compute_dtype, cache_enabled=False)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if not self.profile:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self._timings[name] = self._timings.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def _step_timing_hooks(self) -> Iterator[None]:
        """Time each sampling step from the first to the last module of the head's decoder pass."""
        if not self.profile or self.use_cuda_graphs:
            yield
            return
        head = self.policy.action_head
        starts: list[float] = []
        steps: list[float] = []

        def step_start(_module: Any, _inputs: Any) -> None:
            self._sync()
            starts.append(time.perf_counter())

        def step_end(_module: Any, _inputs: Any, _output: Any) -> None:
            self._sync()
            if starts:
                steps.append(time.perf_counter() - starts[-1])

        handles = [
            head.noise_embedding.register_forward_pre_hook(step_start),
            head.action_out.register_forward_hook(step_end),
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            for index, seconds in enumerate(steps):
                self._timings[f"dit_step_{index}"] = seconds

    # ------------------------------------------------------------------ input validation
    def _image_tensor(self, view: str, image: ImageInput) -> Tensor:
        size = self.policy.image_size
        if isinstance(image, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(image))
        elif torch.is_tensor(image):
            tensor = image.detach()
        else:
            raise TypeError(f"view '{view}': image must be a numpy array or torch tensor, got {type(image).__name__}")
        if tensor.dtype == torch.uint8:
            if tensor.ndim != 3 or tensor.shape[-1] != 3:
                raise ValueError(
                    f"view '{view}': uint8 images must be H x W x 3 (RGB), got shape {tuple(tensor.shape)}"
                    + (" (RGBA? drop the alpha channel)" if tensor.ndim == 3 and tensor.shape[-1] == 4 else "")
                )
            pixels = uint8_to_pixels(tensor.to(self.device))
        elif tensor.is_floating_point():
            if tensor.ndim != 3 or tensor.shape[0] != 3:
                raise ValueError(
                    f"view '{view}': float images must be 3 x H x W in [-1, 1], got shape {tuple(tensor.shape)}"
                )
            pixels = tensor.to(device=self.device, dtype=torch.float32)
            if not bool(torch.isfinite(pixels).all()):
                raise ValueError(f"view '{view}': image contains NaN or Inf")
            low, high = float(pixels.min()), float(pixels.max())
            if low < -1.001 or high > 1.001:
                raise ValueError(f"view '{view}': float image values must lie in [-1, 1], got [{low:.3g}, {high:.3g}]")
        else:
            raise TypeError(f"view '{view}': image dtype must be uint8 (H x W x 3) or float (3 x H x W), got {tensor.dtype}")
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        if (height, width) != (size, size):
            if not self.resize_images:
                raise ValueError(
                    f"view '{view}': image is {height} x {width}, the model expects {size} x {size}; "
                    "crop/resize in the camera pipeline (as for the training data) or enable resize_images"
                )
            pixels = resize_pixels(pixels, size)  # the converter stores training frames with the same resize
        return pixels

    def prepare_images(self, images: Mapping[str, ImageInput]) -> Tensor:
        """Validate and convert one observation's camera images -> [1, V, 3, S, S] in [-1, 1]."""
        if not isinstance(images, Mapping):
            raise TypeError(f"images must be a mapping view name -> image, got {type(images).__name__}")
        expected = self.policy.view_names
        missing = [v for v in expected if v not in images]
        unexpected = sorted(set(images) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"camera views do not match the policy's {list(expected)}: "
                f"missing {missing}, unexpected {unexpected}"
            )
        return torch.stack([self._image_tensor(view, images[view]) for view in expected])[None]

    def prepare_proprio(self, proprio: Optional[Union[np.ndarray, Tensor, list]]) -> Optional[Tensor]:
        """Validate and normalise the proprio vector -> [1, P] (None for policies without proprio)."""
        expected = self.policy.proprio_dim
        if expected == 0:
            if proprio is not None:
                raise ValueError("this policy takes no proprio input, but proprio was given")
            return None
        if proprio is None:
            raise ValueError(f"this policy needs a {expected}-d proprio vector, got None")
        values = proprio.detach().cpu().numpy() if torch.is_tensor(proprio) else np.asarray(proprio)
        if not np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_:
            raise TypeError(f"proprio must be numeric, got dtype {values.dtype}")
        values = values.astype(np.float64)
        if values.shape != (expected,):
            raise ValueError(f"proprio must have shape ({expected},), got {values.shape}")
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"proprio contains NaN or Inf at indices {bad.tolist()}")
        normalized = self.normalizers["proprio"].normalize(values)
        return torch.as_tensor(normalized, dtype=torch.float32, device=self.device)[None]

    @staticmethod
    def _check_instruction(instruction: str) -> str:
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        text = " ".join(instruction.split())
        if not text:
            raise ValueError("instruction is empty")
        return text

    def encode_instruction(self, instruction: str) -> TextConditioning:
        """CLIP encoding of ``instruction``, from the cache when seen recently."""
        text = self._check_instruction(instruction)
        cached = self._text_cache.get(text)
        if cached is not None:
            self._text_cache.move_to_end(text)
            self.last_text_cache_hit = True
            return cached
        with self._stage("text_encode"), torch.inference_mode(), self._autocast():
            encoded = self.policy.tvp.encode_text([text])
        encoded = TextConditioning(encoded.hidden_states.clone(), encoded.pooled.float().clone())
        self._text_cache[text] = encoded
        while len(self._text_cache) > self.text_cache_size:
            self._text_cache.popitem(last=False)
        self.last_text_cache_hit = False
        return encoded

    # ------------------------------------------------------------------ planning
    def _sample_normalized(self, images: Tensor, text: TextConditioning, proprio: Optional[Tensor], generator: Optional[torch.Generator]) -> Tensor:
        context = self.policy.observation_context(images, text, proprio, stage_timer=self._stage)
        with self._stage("action_sampling"), self._step_timing_hooks():
            return self._sample_from_context(context, generator)

    def _sample_from_context(self, context: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        """[B, H, A] normalised chunks; the mean of ``samples_per_plan`` draws per observation."""
        count = self.samples_per_plan
        if count == 1:
            return self.policy.action_head.sample(context, generator=generator, steps=self.sampling_steps)
        draws = self.policy.action_head.sample(context.repeat_interleave(count, dim=0), generator=generator,
                                               steps=self.sampling_steps)
        return draws.view(context.shape[0], count, *draws.shape[1:]).mean(dim=1)

    def _graphed_sample(self, images: Tensor, text: TextConditioning, proprio: Optional[Tensor]) -> Tensor:
        static = self._static
        if self._graph is None:
            static["images"] = images.clone()
            static["hidden"] = text.hidden_states.clone()
            static["pooled"] = text.pooled.clone()
            if proprio is not None:
                static["proprio"] = proprio.clone()

            def run() -> Tensor:
                static_text = TextConditioning(static["hidden"], static["pooled"])
                context = self.policy.observation_context(static["images"], static_text, static.get("proprio"))
                # generator=None: the default CUDA generator is the one CUDA graphs replay safely.
                return self._sample_from_context(context, generator=None)

            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cuDNN/cuBLAS autotuning and lazy allocations
                    run()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static["actions"] = run()
            self._graph = graph
        else:
            if images.shape != static["images"].shape or text.hidden_states.shape != static["hidden"].shape:
                raise RuntimeError("CUDA graph was captured for other input shapes")
            static["images"].copy_(images)
            static["hidden"].copy_(text.hidden_states)
            static["pooled"].copy_(text.pooled)
            if proprio is not None:
                static["proprio"].copy_(proprio)
        with self._stage("graph_replay"):
            self._graph.replay()
        return static["actions"].clone()

    def plan(
        self,
        images: Mapping[str, ImageInput],
        instruction: str,
        proprio: Optional[Union[np.ndarray, Tensor, list]] = None,
    ) -> np.ndarray:
        """One action chunk [horizon, action_dim] in robot units (float64) for the current observation.

        ``images`` maps every view name of the policy (``policy.view_names``) to a uint8
        H x W x 3 RGB array/tensor or a float 3 x H x W tensor in [-1, 1]; ``proprio`` is the raw
        (un-normalised) proprio vector, required exactly when the policy uses proprio.
        """
        self._timings = {}
        start = time.perf_counter()
        with self._stage("preprocess"):
            image_batch = self.prepare_images(images)
            proprio_batch = self.prepare_proprio(proprio)
        text = self.encode_instruction(instruction)
        with torch.inference_mode(), self._autocast():
            if self.use_cuda_graphs:
                normalized = self._graphed_sample(image_batch, text, proprio_batch)
            else:
                normalized = self._sample_normalized(image_batch, text, proprio_batch, self._generator)
        with self._stage("postprocess"):
            chunk = normalized[0].float().cpu().numpy()
            if not np.isfinite(chunk).all():
                raise RuntimeError("the policy produced non-finite actions; refusing to return them")
            actions = self.normalizers["actions"].unnormalize(chunk)
        self._timings["total"] = time.perf_counter() - start
        self.last_timings = dict(self._timings)
        return actions

    @torch.inference_mode()
    def predict_video(
        self, images: Mapping[str, ImageInput], instruction: str, steps: Optional[int] = None, guidance_scale: float = 1.0
    ) -> np.ndarray:
        """The TVP's predicted future for each view as uint8 [V, T, H, W, 3] (for previews)."""
        image_batch = self.prepare_images(images)
        text = self.encode_instruction(instruction)
        generator = torch.Generator("cpu").manual_seed(self.seed) if self.seed is not None else None
        with self._autocast():
            video = self.policy.tvp.predict_video(
                image_batch, text.hidden_states, steps=steps, generator=generator, guidance_scale=guidance_scale
            )
        frames = ((video[0].float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return frames.permute(0, 1, 3, 4, 2).cpu().numpy()
