"""Optimizer and learning-rate schedule for adapter fine-tuning.

AdamW (Loshchilov & Hutter, 2019) over the adapter parameters. Schedule, for optimizer step ``n`` of ``N`` with
``W`` warm-up steps and floor ``m = min_lr_ratio``:

    lr(n) = lr · (n + 1) / (W + 1)                                    for n < W
    lr(n) = lr · (m + (1 − m) · ½ · (1 + cos(π · (n − W) / (N − W))))  otherwise
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from adamergex_pl.errors import InvalidValueError

OPTIMIZERS = ("auto", "adamw", "paged_adamw_32bit", "paged_adamw_8bit")


@dataclass(frozen=True)
class OptimizerSpec:
    """Optimizer and schedule settings (see the module docstring for the formula).

    Args:
        name: ``auto`` (paged on CUDA), ``adamw``, ``paged_adamw_32bit`` or ``paged_adamw_8bit`` (CUDA only).
        learning_rate: Peak learning rate.
        weight_decay: Decoupled weight decay, never on (IA)³ vectors, biases or norms.
        betas: Adam betas.
        eps: Adam epsilon.
        warmup_ratio: Warm-up length as a fraction of all optimizer steps.
        warmup_steps: Warm-up length in steps; exclusive with a non-zero ``warmup_ratio``.
        min_lr_ratio: The cosine floor as a fraction of ``learning_rate``.

    Raises:
        ValueError: An unknown optimizer, a non-positive learning rate, or both warm-up options set.
    """

    name: str = "auto"
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise InvalidValueError(
                f"optimizer={self.name!r} is not supported; expected one of {', '.join(OPTIMIZERS)}"
            )
        if self.learning_rate <= 0:
            raise InvalidValueError(f"learning_rate={self.learning_rate} must be positive, e.g. 2e-4")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise InvalidValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.warmup_steps is not None and self.warmup_ratio > 0:
            raise InvalidValueError(
                f"warmup_steps={self.warmup_steps} and warmup_ratio={self.warmup_ratio} conflict; set only one "
                "(e.g. --model.init_args.warmup_ratio 0 to use warmup_steps)"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise InvalidValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")

    def build(self, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
        """The optimizer over ``model``'s trainable parameters, with and without weight decay."""
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "ia3_l" in name or "norm" in name else decay).append(param)
        if not decay and not no_decay:
            raise InvalidValueError("the model has no trainable parameters; check target_modules")
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        name = self.name
        if name == "auto":
            name = "paged_adamw_32bit" if device.type == "cuda" else "adamw"
        kwargs = dict(lr=self.learning_rate, betas=self.betas, eps=self.eps)
        if name == "adamw":
            return torch.optim.AdamW(groups, **kwargs)
        if device.type != "cuda":
            raise InvalidValueError(
                f"optimizer={self.name!r} needs a CUDA device (paged optimizers page GPU memory), but training "
                f"runs on {device.type}; use optimizer: adamw or auto"
            )
        import bitsandbytes as bnb

        optimizer_class = (
            bnb.optim.PagedAdamW32bit if name == "paged_adamw_32bit" else bnb.optim.PagedAdamW8bit
        )
        return optimizer_class(groups, **kwargs)

    def schedule(
        self, optimizer: torch.optim.Optimizer, total_steps: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """Linear warm-up, then cosine decay to ``min_lr_ratio · learning_rate`` at ``total_steps``."""
        total_steps = max(1, int(total_steps))
        warmup = (
            self.warmup_steps if self.warmup_steps is not None else math.ceil(self.warmup_ratio * total_steps)
        )
        warmup = min(warmup, total_steps)
        floor = self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total_steps - warmup)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
