"""The training loop both stages share: accelerate, AdamW + warm-up/decay, EMA, checkpoints, logs.

Reproducibility and exact resume
--------------------------------
- Batches come from ``StepBatchSampler``: an endless stream of per-epoch permutations seeded by
  (seed, epoch); process ``rank`` of ``world`` takes every ``world``-th batch. The batch of a
  given (optimizer step, micro-step) is a pure function of the seed, so resuming at step n needs
  no sampler state: the sampler starts at n's position.
- Every random draw of a training step (noise levels, noise, language dropout, augmentation)
  comes from a generator seeded by (seed, step, micro-step, rank) (``step_generator``).
- ``accelerate``'s ``save_state`` / ``load_state`` store the model, optimizer, scheduler, EMA
  (registered for checkpointing) and RNG states; ``trainer_state.json`` stores the step.
Together a resumed run continues exactly as the uninterrupted run would have (on the same
hardware and software, given deterministic kernels).

Multi-GPU: run the same command under ``accelerate launch --num_processes N -m
vpp_core.training.stage1 ...``; the model is wrapped in DDP by ``accelerator.prepare``, each
process reads its own batches, gradients are averaged, only the main process logs and writes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .config import EMAConfig, OptimConfig, RunConfig

__all__ = [
    "StepBatchSampler",
    "ExponentialMovingAverage",
    "build_optimizer",
    "build_scheduler",
    "lr_multiplier",
    "step_generator",
    "CheckpointManager",
    "make_accelerator",
    "TrainLoop",
]

LOG = logging.getLogger("vpp_core.training")


# --------------------------------------------------------------------------- determinism
def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style mixing; stable across runs and machines)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state & 0x7FFFFFFFFFFFFFFF


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """CPU generator for every random draw of one micro-step of training."""
    return torch.Generator("cpu").manual_seed(_mix(seed, step, micro, rank))


class StepBatchSampler:
    """Endless, resumable batch sampler: yields lists of ``(item_index, item_seed)``.

    The stream is the concatenation of per-epoch permutations of ``range(num_items)`` (epoch e
    shuffled with seed (seed, e)); global batch g covers stream positions
    [g * batch_size, (g + 1) * batch_size); process ``rank`` gets global batches rank, rank +
    world, ... ``start_batch`` is this process's first local batch index (resume). Each item
    carries its own seed for deterministic augmentation in any DataLoader worker.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start_batch: int = 0) -> None:
        if num_items < 1:
            raise ValueError("the training set is empty")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start_batch = start_batch
        self._epoch_cache: tuple[int, list[int]] = (-1, [])

    def _permutation(self, epoch: int) -> list[int]:
        if self._epoch_cache[0] != epoch:
            generator = torch.Generator("cpu").manual_seed(_mix(self.seed, 7919, epoch))
            self._epoch_cache = (epoch, torch.randperm(self.num_items, generator=generator).tolist())
        return self._epoch_cache[1]

    def batch(self, local_batch: int) -> list[tuple[int, int]]:
        global_batch = local_batch * self.world + self.rank
        start = global_batch * self.batch_size
        items = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.num_items)
            items.append((self._permutation(epoch)[offset], _mix(self.seed, 104729, position)))
        return items

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        local = self.start_batch
        while True:
            yield self.batch(local)
            local += 1

    def __len__(self) -> int:  # DataLoader asks; the stream is endless
        return 2**62


# --------------------------------------------------------------------------- optimisation
def build_optimizer(named_parameters: Iterable[tuple[str, nn.Parameter]], optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (biases, norms, embeddings of 1 dim are not decayed).

    Reference: lr 1e-4 (stage 2) / 5e-6 (TVP), betas (0.9, 0.9), weight decay 0.05.
    """
    decay, no_decay = [], []
    for _, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters")
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps
    )


def lr_multiplier(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine / linear decay to ``min_lr_ratio``."""
    if optim.warmup_steps > 0 and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.decay == "constant":
        return 1.0
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, max(0.0, (step - optim.warmup_steps) / span))
    if optim.decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif optim.decay == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"optim.decay must be cosine, linear or constant, got {optim.decay!r}")
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if optim.decay not in ("cosine", "linear", "constant"):
        raise ValueError(f"optim.decay must be cosine, linear or constant, got {optim.decay!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, optim, total_steps))


class ExponentialMovingAverage:
    """fp32 shadow copies of a module's trainable parameters.

    ``state_dict`` / ``load_state_dict`` make it a checkpointable object for accelerate.
    """

    def __init__(self, module: nn.Module, config: EMAConfig) -> None:
        self.config = config
        self.names = [name for name, p in module.named_parameters() if p.requires_grad]
        parameters = dict(module.named_parameters())
        self.shadow = {name: parameters[name].detach().float().clone() for name in self.names}
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        cfg = self.config
        return min(cfg.decay, (1.0 + updates) / (cfg.warmup + updates)) if cfg.warmup > 0 else cfg.decay

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.decay_at(self.updates)
        parameters = dict(module.named_parameters())
        shadows = [self.shadow[name] for name in self.names]
        current = [parameters[name].detach().float() for name in self.names]
        torch._foreach_lerp_(shadows, current, 1.0 - decay)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite ``module``'s trainable parameters with the averages."""
        parameters = dict(module.named_parameters())
        for name in self.names:
            parameters[name].copy_(self.shadow[name].to(parameters[name].dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "shadow": {name: t.clone() for name, t in self.shadow.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = sorted(set(self.names) - set(state["shadow"]))
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} parameters, e.g. {missing[:3]}")
        self.updates = int(state["updates"])
        for name in self.names:
            self.shadow[name].copy_(state["shadow"][name])

    def to(self, device: torch.device) -> "ExponentialMovingAverage":
        self.shadow = {name: t.to(device) for name, t in self.shadow.items()}
        return self


# --------------------------------------------------------------------------- checkpoints
class CheckpointManager:
    """``<output_dir>/checkpoints/step_0000100/`` = accelerate state + ``trainer_state.json``."""

    def __init__(self, output_dir: Path, keep: int) -> None:
        self.root = Path(output_dir) / "checkpoints"
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:07d}"

    def list(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        complete = [p for p in self.root.glob("step_*") if (p / "trainer_state.json").is_file()]
        return sorted(complete, key=lambda p: int(p.name.split("_")[1]))

    def latest(self) -> Optional[Path]:
        found = self.list()
        return found[-1] if found else None

    def save(self, accelerator: Any, step: int, extra: Mapping[str, Any]) -> Path:
        path = self.path(step)
        accelerator.save_state(str(path))
        if accelerator.is_main_process:
            (path / "trainer_state.json").write_text(json.dumps({"step": step, **extra}, indent=2))
            if self.keep > 0:
                for old in self.list()[: -self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return path

    @staticmethod
    def read_step(path: Path) -> int:
        return int(json.loads((Path(path) / "trainer_state.json").read_text())["step"])

    def resolve_resume(self, resume: Optional[str]) -> Optional[Path]:
        """The checkpoint to resume from (None: fresh start)."""
        if resume is None or resume == "" or resume is False:
            existing = self.latest()
            if existing is not None:
                raise FileExistsError(
                    f"{self.root.parent} already has checkpoints (latest {existing.name}); "
                    "pass run.resume=auto to continue it or choose another run.output_dir"
                )
            return None
        if resume == "auto":
            return self.latest()
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"run.resume={resume}: not a checkpoint directory (no trainer_state.json)")
        return path


def make_accelerator(run: RunConfig, output_dir: Path) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if run.mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"run.mixed_precision must be no, fp16 or bf16, got {run.mixed_precision!r}")
    log_with = None
    if run.tensorboard:
        log_with = "tensorboard"
    return Accelerator(
        # Without CUDA, say so: accelerate then runs a multi-process launch (torchrun) as
        # MULTI_CPU over gloo instead of several independent single-process runs.
        cpu=not torch.cuda.is_available(),
        mixed_precision=run.mixed_precision,
        gradient_accumulation_steps=run.gradient_accumulation_steps,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tensorboard")),
    )


# --------------------------------------------------------------------------- loop
@dataclass
class TrainResult:
    """What a stage returns: its final output directory, this call's per-step losses, the last step."""

    output: Path
    losses: list
    step: int


class TrainLoop:
    """Runs ``max_steps`` optimizer steps of ``loss_fn`` with checkpoints, EMA, logs and progress.

    ``loss_fn(model, batch, generator) -> scalar loss`` is called once per micro-batch inside
    ``accelerator.accumulate`` and ``accelerator.autocast``. ``make_batches(start_batch)`` returns
    an iterator of this process's micro-batches starting at local micro-batch ``start_batch``.
    """

    def __init__(
        self,
        *,
        accelerator: Any,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: Optional[ExponentialMovingAverage],
        run: RunConfig,
        optim: OptimConfig,
        ema_config: EMAConfig,
        output_dir: Path,
        loss_fn: Callable[[nn.Module, Any, torch.Generator], Tensor],
        make_batches: Callable[[int], Iterator[Any]],
        name: str,
    ) -> None:
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ema = ema
        self.run = run
        self.optim = optim
        self.ema_config = ema_config
        self.output_dir = Path(output_dir)
        self.loss_fn = loss_fn
        self.make_batches = make_batches
        self.name = name
        self.checkpoints = CheckpointManager(self.output_dir, run.keep_checkpoints)
        self.step = 0
        self.history: list[float] = []

    @classmethod
    def for_module(
        cls,
        *,
        accelerator: Any,
        module: nn.Module,
        dataset: Any,
        run: RunConfig,
        optim: OptimConfig,
        ema_config: EMAConfig,
        num_workers: int,
        output_dir: Path,
        loss_fn: Callable[[nn.Module, Any, torch.Generator], Tensor],
        name: str,
    ) -> "TrainLoop":
        """What a training stage needs around ``module``: AdamW + schedule prepared by the
        accelerator, EMA when enabled (both registered for checkpointing), and step-seeded
        batches of ``dataset`` (items keyed as ``StepBatchSampler`` yields them, ``collate``d).
        """
        optimizer = build_optimizer(module.named_parameters(), optim)
        scheduler = build_scheduler(optimizer, optim, run.max_steps)
        model, optimizer = accelerator.prepare(module, optimizer)
        accelerator.register_for_checkpointing(scheduler)
        ema = None
        if ema_config.enabled:
            ema = ExponentialMovingAverage(module, ema_config).to(accelerator.device)
            accelerator.register_for_checkpointing(ema)

        def make_batches(start_batch: int) -> Iterator[Any]:
            sampler = StepBatchSampler(
                len(dataset), run.batch_size, run.seed, accelerator.process_index, accelerator.num_processes, start_batch
            )
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=num_workers,
                collate_fn=collate,
                persistent_workers=num_workers > 0,
            )
            return iter(loader)

        return cls(
            accelerator=accelerator,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            ema=ema,
            run=run,
            optim=optim,
            ema_config=ema_config,
            output_dir=output_dir,
            loss_fn=loss_fn,
            make_batches=make_batches,
            name=name,
        )

    def trained_module(self) -> nn.Module:
        """The unwrapped module, holding the EMA weights when EMA is on (once training has ended)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.ema is not None:
            self.ema.copy_to(unwrapped)
        return unwrapped

    def maybe_resume(self) -> Optional[Path]:
        path = self.checkpoints.resolve_resume(self.run.resume)
        if path is None:
            return None
        self.accelerator.load_state(str(path))
        self.step = self.checkpoints.read_step(path)
        if self.accelerator.is_main_process:
            LOG.info("%s: resumed from %s at step %d", self.name, path, self.step)
        return path

    def save_checkpoint(self) -> Path:
        return self.checkpoints.save(self.accelerator, self.step, {"stage": self.name})

    def run_to_end(self) -> list[float]:
        """Trackers, resume, train to ``max_steps``, and a checkpoint of the final step (once)."""
        if self.accelerator.is_main_process and self.run.tensorboard:
            self.accelerator.init_trackers(self.name)
        self.maybe_resume()
        losses = self.train()
        if not (self.checkpoints.path(self.step) / "trainer_state.json").is_file():
            self.save_checkpoint()
        return losses

    def _trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self) -> list[float]:
        """Train from ``self.step`` to ``run.max_steps``; returns the per-step losses of this call."""
        accelerator, run = self.accelerator, self.run
        accum = run.gradient_accumulation_steps
        rank = accelerator.process_index
        batches = self.make_batches(self.step * accum)
        progress = None
        if run.progress_bar and accelerator.is_main_process:
            from tqdm.auto import tqdm

            progress = tqdm(total=run.max_steps, initial=self.step, desc=self.name, dynamic_ncols=True)
        self.model.train()
        window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
        losses: list[float] = []
        try:
            while self.step < run.max_steps:
                step_loss = 0.0
                grad_norm = float("nan")
                for micro in range(accum):
                    batch = next(batches)
                    generator = step_generator(run.seed, self.step, micro, rank)
                    with accelerator.accumulate(self.model):
                        with accelerator.autocast():
                            loss = self.loss_fn(self.model, batch, generator)
                        if not torch.isfinite(loss.detach()):
                            raise FloatingPointError(f"{self.name}: non-finite loss {loss.item()} at step {self.step}")
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            max_norm = self.optim.grad_clip if self.optim.grad_clip > 0 else float("inf")
                            norm = accelerator.clip_grad_norm_(self._trainable(), max_norm)
                            grad_norm = float(norm) if norm is not None else float("nan")
                        self.optimizer.step()  # accelerate skips it on accumulation micro-steps
                        if accelerator.sync_gradients:
                            # The scheduler is NOT prepared by accelerate (its prepared form steps
                            # once per process); it counts optimizer steps, as lr_multiplier expects.
                            self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    step_loss += float(loss.detach()) / accum
                self.step += 1
                if self.ema is not None and self.step % self.ema_config.update_every == 0:
                    self.ema.update(accelerator.unwrap_model(self.model))
                losses.append(step_loss)
                window_steps += 1
                window_loss += step_loss
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{step_loss:.4f}")
                if self.step % run.log_every == 0 or self.step == run.max_steps:
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    lr = self.scheduler.get_last_lr()[0]
                    scalars = {
                        "train/loss": window_loss / window_steps,
                        "train/lr": lr,
                        "train/grad_norm": grad_norm,
                        "train/steps_per_s": window_steps / elapsed,
                        "train/samples_per_s": window_steps * accum * run.batch_size * accelerator.num_processes / elapsed,
                    }
                    accelerator.log(scalars, step=self.step)
                    if accelerator.is_main_process:
                        LOG.info(
                            "%s step %d: loss %.5f lr %.3g grad-norm %.3g %.2f it/s",
                            self.name, self.step, scalars["train/loss"], lr, grad_norm, scalars["train/steps_per_s"],
                        )
                    window_start, window_steps, window_loss = time.perf_counter(), 0, 0.0
                if run.checkpoint_every > 0 and self.step % run.checkpoint_every == 0 and self.step < run.max_steps:
                    self.save_checkpoint()
        finally:
            if progress is not None:
                progress.close()
        return losses


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings / ints as lists."""
    result: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if torch.is_tensor(values[0]):
            result[key] = torch.stack(values)
        else:
            result[key] = values
    return result


__all__ += ["configure_logging", "collate", "TrainResult"]
