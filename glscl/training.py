"""GLSCL training core in plain PyTorch: the run settings, the trainable module and a resumable trainer. Pairs and
batches live in `glscl.data`, the optimiser and schedule in `glscl.optim`, the gradient-keeping all-gather in
`glscl.distributed`.

Head mode trains the GLSCL head on cached CLIP features; full mode also fine-tunes the open_clip backbone from raw
frames and token ids. Both share the module, the losses and the trainer. Nothing here imports Ray, Prefect or
LanceDB: a distributed caller passes `rank`, `world_size` and `gather=all_gather_with_grad` and wraps the module
in DistributedDataParallel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from glscl.checkpoint import read_training_state, write_training_state
from glscl.config import DEFAULT_BLOCK, GLSCLConfig, Mode, TrainConfig
from glscl.data import Batch, Pairs, PairSampler, TextInput, VideoInput, dropout_seed, rank_batches
from glscl.distributed import ScaleGrad
from glscl.losses import GLSCLLoss
from glscl.metrics import both_directions
from glscl.model import GLSCL, TextEncoding, VideoEncoding, encode_in_chunks
from glscl.optim import WarmupCosine, make_optimizer

if TYPE_CHECKING:
    from glscl.backbone import Backbone

Gather = Callable[[Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]
# This rank's batches of steps [start, stop): (data, sampler, local slice, start, stop) -> batches in step order.
BatchStream = Callable[[Pairs, PairSampler, slice, int, int], Iterator[Batch]]

# Backbone parameters frozen in full mode: CLIP's own logit scale/bias are unused (GLSCL has its own, and DDP
# rejects parameters without gradients); the patch-embedding conv is frozen as in the paper.
FROZEN_BACKBONE = ("logit_scale", "logit_bias", "visual.conv1.weight")
# Training-config fields that fix the sequence of batches and updates; a resumed run must keep them.
_RESUME_FIELDS = (
    "epochs",
    "batch_size",
    "seed",
    "mode",
    "betas",
    "eps",
    "optimizer",
    "schedule",
    "decay",
    "logit_scale_lr",
    "batches",
)


class TrainOutput(NamedTuple):
    """What the loss needs from a global batch: scores [B, B] (texts x videos), gamma, local concepts [B, K, D],
    and with hard negatives their scores [B, B] (negative texts x videos) and validity [B]."""

    scores: Tensor
    logit_scale: Tensor
    video_local: Tensor
    text_local: Tensor
    negative_scores: Tensor | None = None
    negative_valid: Tensor | None = None


def _identity(tensor: Tensor) -> Tensor:
    """The single-process gather."""
    return tensor


class TrainModule(nn.Module):
    """The GLSCL head plus, in full mode, the open_clip backbone (`backbone.model`) being fine-tuned.

    The backbone must live on the training device (its pixel constants are not moved by `.to`). Its unused CLIP
    logit scale/bias and its patch-embedding conv are frozen here (`FROZEN_BACKBONE`).
    """

    def __init__(self, head: GLSCL, backbone: Backbone | None = None) -> None:
        super().__init__()
        self.head = head
        self.backbone = backbone
        self.clip = None if backbone is None else backbone.model
        if backbone is not None:
            if backbone.embed_dim != head.config.embed_dim:
                raise ValueError(f"backbone embed_dim {backbone.embed_dim} != head {head.config.embed_dim}")
            for name, param in backbone.model.named_parameters():
                if name in FROZEN_BACKBONE:
                    param.requires_grad_(False)

    @property
    def mode(self) -> Mode:
        """'full' when a backbone is fine-tuned, else 'head'."""
        return "head" if self.clip is None else "full"

    def _frame_features(self, frames: Tensor, mask: Tensor) -> Tensor:
        """CLIP image features [B, F, D] of the valid uint8 `frames`; padded frames are not encoded and stay zero."""
        batch, num_frames = mask.shape
        valid = mask.reshape(-1).nonzero().squeeze(1)
        pixels = self.backbone.pixels(frames.reshape(batch * num_frames, *frames.shape[2:])[valid])
        encoded = self.clip.encode_image(pixels)
        feats = encoded.new_zeros(batch * num_frames, encoded.shape[-1]).index_copy(0, valid, encoded)
        return feats.view(batch, num_frames, -1)

    def encode_videos(self, videos: VideoInput) -> VideoEncoding:
        """Per-video encodings, once per video."""
        if self.clip is None:
            return self.head.encode_video(videos.data, videos.mask)
        feats = self._frame_features(videos.data, videos.mask)
        if not self.head.encodes_padding:
            return self.head.encode_video(feats, videos.mask)
        blank = self.backbone.blank_frame(grad=True)  # follows the fine-tuned weights; checkpoints keep the latest
        self.head.set_blank_frame(blank.detach())
        return self.head.encode_video(feats, videos.mask, blank)

    def encode_texts(self, texts: TextInput) -> TextEncoding:
        """Per-text encodings, once per text."""
        if self.clip is None:
            return self.head.encode_text(texts.sentence, texts.tokens, texts.mask)
        return self.head.encode_text(*self.backbone.text_features(texts.tokens, keep_padding=self.head.encodes_padding))

    def forward(self, batch: Batch, gather: Gather = _identity) -> TrainOutput:
        """Encode this rank's pairs, all-gather the encodings with `gather`, score the global batch."""
        video = VideoEncoding(*(gather(t) for t in self.encode_videos(batch.videos)))
        text = TextEncoding(*(gather(t) for t in self.encode_texts(batch.texts)))
        output = TrainOutput(self.head.score(text, video), self.head.logit_scale_exp(), video.local, text.local)
        if batch.negatives is None:
            return output
        negatives = TextEncoding(*(gather(t) for t in self.encode_texts(batch.negatives)))
        valid = gather(batch.negative_valid)
        return output._replace(negative_scores=self.head.score(negatives, video), negative_valid=valid)


def half_stored_parameters(clip: nn.Module) -> list[nn.Parameter]:
    """The CLIP parameters OpenAI's `convert_weights` casts to fp16 (convolutions, linear layers, attention
    projections, and the two output projections); layer norms and embeddings stay fp32, as in the authors' run."""
    found: dict[int, nn.Parameter] = {}
    for module in clip.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear):
            names = ("weight", "bias")
        elif isinstance(module, nn.MultiheadAttention):
            names = ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")
        else:
            names = ("text_projection", "proj")
        for name in names:
            parameter = getattr(module, name, None)
            if isinstance(parameter, nn.Parameter):
                found[id(parameter)] = parameter
    return list(found.values())


class Trainer:
    """Trains a `TrainModule` (optionally DDP-wrapped) with AdamW, warmup-cosine lr, clipping and a clamped scale.

    Distributed: each of `world_size` ranks takes its slice of every global batch and `gather` (e.g.
    `all_gather_with_grad`) assembles the global batch before the loss. DDP averages gradients over ranks while
    each rank's gradient holds only its own slice's share, so the local encodings' gradients are scaled by
    `world_size`: a W-rank run then follows the single-process run on the same global batches (up to dropout
    masks and float rounding).
    """

    def __init__(
        self,
        module: nn.Module,
        config: GLSCLConfig,
        train_config: TrainConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        gather: Gather | None = None,
    ) -> None:
        self.module = module
        self.raw: TrainModule = module.module if isinstance(module, DistributedDataParallel) else module
        self.config = config
        self.train_config = train_config
        self.rank = rank
        self.world_size = world_size
        self._check_setup(gather)
        self.gather = gather or _identity
        self.loss = GLSCLLoss(config)
        self.optimizer = make_optimizer(
            self.raw,
            config,
            train_config.optimizer,
            train_config.betas,
            train_config.eps,
            decay=train_config.decay,
            logit_scale_lr=train_config.logit_scale_lr,
        )
        self.step = 0
        self.schedule: WarmupCosine | None = None
        self.epoch_stats: list[dict[str, float]] = []
        self._store_clip_weights()

    def _check_setup(self, gather: Gather | None) -> None:
        """Reject inconsistent mode, rank, batch split or a missing gather."""
        if self.raw.mode != self.train_config.mode:
            raise ValueError(f"train mode {self.train_config.mode!r} but the module is in {self.raw.mode!r} mode")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside [0, {self.world_size})")
        if self.train_config.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.train_config.batch_size} not divisible by world_size {self.world_size}")
        if self.world_size > 1 and gather is None:
            raise ValueError("world_size > 1 needs a gather function (e.g. all_gather_with_grad)")

    @property
    def head(self) -> GLSCL:
        """The GLSCL head being trained."""
        return self.raw.head

    @property
    def device(self) -> torch.device:
        """Where the module's parameters live; batches are moved there."""
        return self.head.logit_scale.device

    def set_total_steps(self, total_steps: int) -> None:
        """Fix the schedule length (`fit` does this from the data); it may not change once training has begun."""
        if self.schedule is not None and self.schedule.total_steps != total_steps and self.step > 0:
            raise ValueError(
                f"this run was planned for {self.schedule.total_steps} steps but now has {total_steps}: "
                "the data or the epoch count changed since it started"
            )
        cfg = self.train_config
        self.schedule = WarmupCosine.over(
            total_steps, self.config.warmup_fraction, cfg.schedule, steps_per_epoch=total_steps // cfg.epochs
        )

    def _gather_for_loss(self, tensor: Tensor) -> Tensor:
        """`gather`, with the local slice's gradient scaled by world_size to undo DDP's averaging."""
        if self.world_size > 1 and tensor.requires_grad:
            tensor = ScaleGrad.apply(tensor, float(self.world_size))
        return self.gather(tensor)

    def _set_lr(self) -> float:
        """Apply the schedule for the current step; returns the first group's lr."""
        factor = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return self.optimizer.param_groups[0]["lr"]

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimiser update on this rank's slice of a global batch; returns loss terms, lr and grad norm."""
        if self.schedule is None:
            raise RuntimeError("call set_total_steps() (or fit) before train_step")
        lr = self._set_lr()
        self.module.train()
        batch = batch.to(self.device)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.manual_seed(dropout_seed(self.train_config.seed, self.rank, self.step))
            out = self.module(batch, self._gather_for_loss)
            terms = self.loss(*out)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.head.clamp_logit_scale_()
        self._store_clip_weights()
        self.step += 1
        return {name: value.item() for name, value in terms.items()} | {"lr": lr, "grad_norm": grad_norm.item()}

    @torch.no_grad()
    def _store_clip_weights(self) -> None:
        """Round the fine-tuned CLIP's fp16-stored matrices after an update (`TrainConfig.clip_weights`)."""
        if self.raw.clip is None or self.train_config.clip_weights != "fp16":
            return
        for parameter in half_stored_parameters(self.raw.clip):
            parameter.copy_(parameter.half())

    def fit(
        self,
        data: Pairs,
        val_data: Pairs | None = None,
        *,
        on_log: Callback | None = None,
        on_eval: Callback | None = None,
        on_checkpoint: Callback | None = None,
        on_step: Callback | None = None,
        max_steps: int | None = None,
        stream: BatchStream = rank_batches,
    ) -> list[dict[str, float]]:
        """Train from the current step to the end (or to global step `max_steps`); returns per-epoch throughput.

        `on_step` gets {step, epoch, epochs, stop} after every optimiser step (a progress display's hook; `stop` is
        the step training ends at). `stream` reads this rank's batches (default: from `data`, one step at a time).
        `on_log` gets step records every `log_every` steps and an epoch record (with
        pairs/s) at each epoch end.
        At each epoch end and every `eval_every` steps, `val_data` (if any) is evaluated and passed to `on_eval`,
        then `on_checkpoint` gets {step, epoch, metrics}; a run stopped by `max_steps` between those points gets one
        at its last step too, so it always leaves a checkpoint to evaluate or resume from. Callbacks run on every
        rank.
        """
        if data.mode != self.train_config.mode:
            raise ValueError(f"data is in {data.mode!r} mode, the trainer in {self.train_config.mode!r} mode")
        cfg = self.train_config
        sampler = PairSampler(data.text_to_video, data.num_videos, cfg.batch_size, cfg.seed, cfg.batches)
        if sampler.steps_per_epoch == 0:
            raise ValueError(f"need at least batch_size={cfg.batch_size} {cfg.batches}, got {len(sampler.items)}")
        self.set_total_steps(cfg.epochs * sampler.steps_per_epoch)
        stop = self.schedule.total_steps if max_steps is None else min(max_steps, self.schedule.total_steps)
        per_rank = cfg.batch_size // self.world_size
        local = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        seconds, waited, steps, checkpointed = 0.0, 0.0, 0, self.step
        batches = stream(data, sampler, local, self.step, stop)
        while self.step < stop:
            epoch = self.step // sampler.steps_per_epoch
            start = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - start
            terms = self.train_step(batch)
            seconds, steps = seconds + time.perf_counter() - start, steps + 1
            if on_step:
                on_step({"step": self.step, "epoch": epoch, "epochs": cfg.epochs, "stop": stop})
            if on_log and cfg.log_every and self.step % cfg.log_every == 0:
                on_log({"event": "step", "step": self.step, "epoch": epoch, **terms})
            epoch_end = self.step % sampler.steps_per_epoch == 0
            if epoch_end:
                self._record_epoch(epoch, steps, seconds, waited, on_log)
                seconds, waited, steps = 0.0, 0.0, 0
            if epoch_end or (cfg.eval_every and self.step % cfg.eval_every == 0):
                self._checkpoint_point(epoch, val_data, on_eval, on_checkpoint)
                checkpointed = self.step
        if checkpointed != self.step:  # stopped by max_steps between points: leave a checkpoint where it stopped
            self._checkpoint_point((self.step - 1) // sampler.steps_per_epoch, val_data, on_eval, on_checkpoint)
        return self.epoch_stats

    def _record_epoch(self, epoch: int, steps: int, seconds: float, waited: float, on_log: Callback | None) -> None:
        """Store (and log) the epoch's training throughput in global pairs per second (reading the batches
        included, evaluation excluded), the seconds this rank waited for its batches, and the number of ranks that
        shared it."""
        pairs = steps * self.train_config.batch_size
        stats = {"epoch": epoch, "steps": steps, "pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds}
        stats["data_wait_s"] = waited
        stats["world_size"] = self.world_size
        self.epoch_stats.append(stats)
        if on_log:
            on_log({"event": "epoch", "step": self.step, **stats})

    def _checkpoint_point(
        self, epoch: int, val_data: Pairs | None, on_eval: Callback | None, on_checkpoint: Callback | None
    ) -> None:
        """Evaluate (if there is validation data), then hand the point to the callbacks."""
        metrics = None if val_data is None else self.evaluate(val_data)
        if on_eval and metrics is not None:
            on_eval({"step": self.step, "epoch": epoch, **metrics})
        if on_checkpoint:
            on_checkpoint({"step": self.step, "epoch": epoch, "metrics": metrics})

    @torch.no_grad()
    def evaluate(
        self, data: Pairs, block_size: int | tuple[int, int] = DEFAULT_BLOCK, batch_size: int | None = None
    ) -> dict[str, dict[str, float]]:
        """Retrieval metrics on `data` ({"t2v": ..., "v2t": ...}): each item is encoded once, pairs scored in blocks.

        Runs on this rank alone, outside DDP.
        """
        size = batch_size or self.train_config.batch_size
        was_training = self.raw.training
        self.raw.eval()
        try:
            videos = encode_in_chunks(
                lambda rows: self.raw.encode_videos(data.video_input(rows).to(self.device)), data.num_videos, size
            )
            texts = encode_in_chunks(
                lambda rows: self.raw.encode_texts(data.text_input(rows).to(self.device)), data.num_texts, size
            )
            sim = self.head.score(texts, videos, block_size)
        finally:
            self.raw.train(was_training)
        return both_directions(sim.cpu(), data.text_to_video)

    def state_dict(self) -> dict[str, Any]:
        """Model, optimizer, step and schedule. Dropout is seeded from (seed, rank, step), so no RNG state is needed."""
        return {
            "model": self.raw.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "total_steps": None if self.schedule is None else self.schedule.total_steps,
            "train_config": self.train_config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()`; the fields that fix the batch sequence must match this trainer's config."""
        saved = TrainConfig.from_dict(state["train_config"])
        changed = [f for f in _RESUME_FIELDS if getattr(saved, f) != getattr(self.train_config, f)]
        if changed:
            raise ValueError(f"cannot resume: the training config changed in {changed}")
        self.raw.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.schedule = None
        if state["total_steps"] is not None:
            self.set_total_steps(int(state["total_steps"]))

    def save_training_state(self, directory: str | Path) -> Path:
        """Write this run's `state_dict()` with `glscl.checkpoint.write_training_state` (safetensors + JSON, no
        pickles); the state is identical on every rank, so one rank (usually 0) writes it."""
        return write_training_state(directory, self.state_dict(), self.config)

    def load_training_state(self, directory: str | Path) -> None:
        """Restore a `save_training_state` directory after checking its sha256 and model config."""
        self.load_state_dict(read_training_state(directory, self.config))
