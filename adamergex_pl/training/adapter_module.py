"""LightningModule that fine-tunes a LoRA or (IA)³ adapter on a frozen, optionally quantized, causal LM."""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.generation import greedy_completions
from adamergex_pl.evaluation.language_modeling import (
    IGNORE_INDEX,
    Evaluator,
    LanguageModelingEvaluator,
    causal_lm_nll,
    forward_logits,
)
from adamergex_pl.results.printing import finish_evaluation, fit_summary
from adamergex_pl.training.base_model import BaseModelOptions
from adamergex_pl.training.optim import OptimizerSpec
from adamergex_pl.training.peft_model import AdapterSpec
from adamergex_pl.training.strategy_support import check_strategy
from callbacks.adapter_snapshot import resolve_adapter_dir
from callbacks.run_checkpoint import adapter_signature, check_checkpoint_fits
from callbacks.run_checkpoint import install as install_checkpoint_io


class AdapterModule(LightningModule):
    """Fine-tunes a LoRA or (IA)³ adapter (through PEFT) on a frozen causal LM, 4-bit quantized if asked.

    The base model is loaded in :meth:`configure_model` (one copy per DDP rank); checkpoints hold only the
    adapter and the loop state. A NaN or inf loss or adapter stops the fit (exit code 2) without saving it.
    Supported strategies: ``adamergex_pl/training/strategy_support.py``. Logged: ``train/loss``,
    ``train/perplexity``, ``train/lr``, ``train/tokens_per_sec``, ``val/<lang>/loss``,
    ``val/<lang>/perplexity`` and ``val/loss``; kept predictions go to ``<default_root_dir>/predictions.jsonl``.

    Args:
        base_model: hub name, local directory, or ``builtin:tiny-llama`` / ``builtin:<demo model>``.
        adapter_type: ``lora`` or ``ia3``.
        quantization: storage of the frozen base weights: ``nf4`` | ``fp4`` | ``int8`` | ``none``.
        double_quant: 4-bit only: quantize the quantization constants too (QLoRA).
        compute_dtype: 4-bit only: dtype of the matmuls (``auto``: bfloat16 on CUDA, float32 on CPU).
        quant_storage: 4-bit only: storage dtype of packed weights (set to the model dtype for FSDP).
        dtype: dtype of the unquantized base weights (``auto``: bfloat16 on CUDA, float32 on CPU).
        attn_implementation: transformers attention backend (``sdpa``, ``eager``, ``flash_attention_2``).
        gradient_checkpointing: recompute activations in backward (non-reentrant). Default: on when quantized.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale ``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora``).
        lora_dropout: dropout on the LoRA input.
        use_rslora: rank-stabilised LoRA scaling.
        target_modules: modules to adapt (name suffixes) or ``all-linear``; default per adapter type.
        feedforward_modules: (IA)³: target modules whose input is scaled (default: the MLP output projection).
        modules_to_save: modules trained in full beside the adapter (e.g. ``[embed_tokens, lm_head]``).
        adapter_dir: start from this PEFT adapter (or ``AdapterSnapshot`` root, its ``last``).
        stack_on: train stacked on this frozen adapter (the ``stack`` baseline; saved in ``beneath/``).
        loss_on_prompt: take the loss on the prompt too (the AdaMergeX paper's recipe), not the completion only.
        optimizer: ``auto`` (paged 32-bit AdamW on CUDA, AdamW elsewhere), ``adamw``, ``paged_adamw_32bit``,
            ``paged_adamw_8bit``.
        learning_rate: peak learning rate.
        weight_decay: decoupled weight decay (not applied to (IA)³ vectors).
        warmup_ratio: linear warm-up as a fraction of all optimizer steps, then cosine decay.
        warmup_steps: linear warm-up in optimizer steps (instead of ``warmup_ratio``).
        min_lr_ratio: the cosine schedule's floor, as a fraction of ``learning_rate``.
        max_new_tokens: greedy decoding length for ``predict``.
        task: what the adapter learns, recorded in snapshots (e.g. ``xnli`` or ``wiki_lm``).
        language: the training language, recorded in snapshots (the validation language if none is named).

    Raises:
        ValueError: an unknown adapter type, quantization or optimizer, or conflicting options.

    Example:
        ``adamergex fit --config configs/tiny/task_lora.yaml``, or in Python::

            module = AdapterModule("builtin:tiny-llama", adapter_type="lora", quantization="nf4")
            Trainer(max_epochs=1).fit(module, datamodule=InstructionDataModule(...))
    """

    def __init__(
        self,
        base_model: str,
        adapter_type: Literal["lora", "ia3"] = "lora",
        quantization: Literal["nf4", "fp4", "int8", "none"] = "none",
        double_quant: bool = True,
        compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        quant_storage: Literal["float32", "bfloat16", "float16"] | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        attn_implementation: str | None = "sdpa",
        gradient_checkpointing: bool | None = None,
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.05,
        use_rslora: bool = False,
        target_modules: list[str] | str | None = None,
        feedforward_modules: list[str] | None = None,
        modules_to_save: list[str] | None = None,
        adapter_dir: str | None = None,
        stack_on: str | None = None,
        loss_on_prompt: bool = False,
        optimizer: Literal["auto", "adamw", "paged_adamw_32bit", "paged_adamw_8bit"] = "auto",
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        warmup_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        max_new_tokens: int = 64,
        task: str = "task",
        language: str = "en",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.base_options = BaseModelOptions.from_args(
            base_model, quantization, double_quant, compute_dtype, quant_storage, dtype, attn_implementation
        )
        self.quantization = self.base_options.quantization
        self.adapter_spec = AdapterSpec(
            adapter_type=adapter_type,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            use_rslora=use_rslora,
            target_modules=target_modules
            if isinstance(target_modules, str) or target_modules is None
            else tuple(target_modules),
            feedforward_modules=tuple(feedforward_modules) if feedforward_modules is not None else None,
            modules_to_save=tuple(modules_to_save) if modules_to_save else None,
        )
        self.optimizer_spec = OptimizerSpec(
            optimizer,
            learning_rate,
            weight_decay,
            warmup_ratio=warmup_ratio,
            warmup_steps=warmup_steps,
            min_lr_ratio=min_lr_ratio,
        )
        if max_new_tokens < 1:
            raise InvalidValueError(f"max_new_tokens={max_new_tokens} must be a positive integer, e.g. 64")
        self.adapter_dir = str(resolve_adapter_dir(adapter_dir)) if adapter_dir else None
        self.stack_on = str(resolve_adapter_dir(stack_on, "stack_on")) if stack_on else None
        self.model: torch.nn.Module | None = None
        self.evaluator: Evaluator | None = None
        self.strict_loading = False  # checkpoints hold only the adapter (see on_save_checkpoint)
        self._tokens_since_log: torch.Tensor | int = 0
        self._last_log_time: float | None = None
        self._loss_read_every_step = True
        self._last_validation: dict[str, float] = {}  # for the summary at the end of fit
        self._last_validation_at = (0, 0)  # its epoch and global step
        self._predictions: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ model
    @override
    def configure_model(self) -> None:
        if self.model is not None:
            return
        from adamergex_pl.training.peft_model import attach_adapter

        hp = self.hparams
        base = self.base_options.load_for(self)
        checkpointing = (
            self.quantization.quantized if hp.gradient_checkpointing is None else hp.gradient_checkpointing
        )
        self.model = attach_adapter(
            base,
            self.adapter_spec,
            self.quantization.quantized,
            checkpointing,
            adapter_dir=self.adapter_dir,
            stack_on=self.stack_on,
        )
        self.model.train()  # from_pretrained returns eval mode, which would switch LoRA dropout off

    @override
    def setup(self, stage: str) -> None:
        if self._trainer is not None:  # before configure_model loads the base: refuse what cannot work
            check_strategy(self.trainer.strategy, self.quantization)
            install_checkpoint_io(self.trainer.strategy)  # atomic writes, one-line errors for bad files
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        if stage == "predict":
            return
        languages = getattr(datamodule, "test_languages" if stage == "test" else "val_languages", None)
        self._eval_languages = list(languages or [self.hparams.language])
        if hasattr(datamodule, "build_evaluator"):
            self.evaluator = datamodule.build_evaluator()  # None when the DataModule has no evaluation data
        else:
            self.evaluator = LanguageModelingEvaluator(self._eval_languages)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the adapted model for a padded or packed batch."""
        return forward_logits(self.model, batch)

    def _labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.hparams.loss_on_prompt or "labels" not in batch:
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
            if "position_ids" in batch:  # packed: no example's first token is a target of the one before it
                labels = labels.masked_fill(batch["position_ids"] == 0, IGNORE_INDEX)
            return labels
        return batch["labels"]

    # ------------------------------------------------------------------ training
    @override
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        nll, count = causal_lm_nll(self(batch), self._labels(batch))
        loss = nll / count.clamp_min(1)
        if not torch.isfinite(loss):  # one host sync per step: a diverged fit stops before its next update
            raise self._diverged(self.trainer.global_step + 1, f"train/loss is {float(loss.detach())}")
        logging_step = self.trainer._logger_connector.should_update_logs
        if logging_step or self._loss_read_every_step:
            self.log("train/loss", loss, prog_bar=True)
        # Counted on the device, read once per logging interval: no host sync in the step.
        self._tokens_since_log = self._tokens_since_log + batch["attention_mask"].sum()
        if logging_step:
            self._log_training_rates(loss)
        return loss

    @override
    def on_train_start(self) -> None:
        # Loggers read train/loss on logging steps only; a progress bar or a callback monitoring a train/ metric
        # reads it every step. Logging it only when read saves ~1 ms per step (bench/README.md).
        self._loss_read_every_step = self.trainer.progress_bar_callback is not None or any(
            str(getattr(callback, "monitor", None) or "").startswith("train/")
            for callback in self.trainer.callbacks
        )

    def _log_training_rates(self, loss: torch.Tensor) -> None:
        """Perplexity, learning rate and tokens/s, on logging steps only (each ``self.log`` costs ~1 ms)."""
        now = time.perf_counter()
        metrics = {
            "train/perplexity": torch.exp(loss.detach()),
            "train/lr": self.lr_schedulers().get_last_lr()[0],  # the rate this step is taken with
        }
        self.log_dict(metrics)
        if (
            self._last_log_time is not None
        ):  # tokens over the interval since the previous logging step, all ranks
            rate = self._tokens_since_log.float() / max(now - self._last_log_time, 1e-9)
            self.log("train/tokens_per_sec", rate, reduce_fx="sum", sync_dist=self.trainer.world_size > 1)
        self._tokens_since_log, self._last_log_time = 0, now

    @override
    def on_train_epoch_start(self) -> None:
        # the first interval of an epoch would include dataloader start-up (and validation)
        self._tokens_since_log, self._last_log_time = 0, time.perf_counter()

    @override
    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_spec.build(self.model, self.trainer.strategy.root_device)
        total_steps = self.trainer.estimated_stepping_batches
        if not math.isfinite(total_steps):
            raise InvalidValueError(
                "the learning-rate schedule needs a finite number of steps; set trainer.max_epochs or "
                "trainer.max_steps"
            )
        scheduler = self.optimizer_spec.schedule(optimizer, int(total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        # Batches go to the evaluator as the DataModule built them: ``loss_on_prompt`` changes the training loss
        # only, so validation perplexity is always on the completion, and option-scoring labels stay intact.
        self.evaluator.update(self.model, batch, self._eval_languages[dataloader_idx])

    def _log_evaluation(self, prefix: str) -> None:
        if self.evaluator is None:
            return
        results = self.evaluator.compute()
        self._predictions = self.evaluator.predictions()  # a collective under DDP, like compute()
        self.evaluator.reset()
        for key, value in results.items():
            self.log(
                f"{prefix}/{key}", value, add_dataloader_idx=False, sync_dist=False, rank_zero_only=False
            )
        if prefix == "val" and not self.trainer.sanity_checking:
            self._last_validation = {f"val/{key}": float(value) for key, value in results.items()}
            self._last_validation_at = (self.trainer.current_epoch, self.trainer.global_step)

    @override
    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, dataloader_idx)

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    @override
    def on_validation_end(self) -> None:
        finish_evaluation(self.trainer, "val", self._predictions)
        self._predictions = []

    @override
    def teardown(self, stage: str) -> None:
        # after the progress bar has stopped (callbacks tear down first), so that the summary comes after it
        if stage == "fit":
            fit_summary(self.trainer, self._last_validation, *self._last_validation_at)

    @override
    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    @override
    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    @override
    def on_test_end(self) -> None:
        finish_evaluation(self.trainer, "test", self._predictions)
        self._predictions = []

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        tokenizer = self.trainer.datamodule.tokenizer
        completions = greedy_completions(self.model, tokenizer, batch, self.hparams.max_new_tokens)
        return [{"index": int(i), "completion": c} for i, c in zip(batch["index"], completions, strict=True)]

    # ------------------------------------------------------------------ divergence
    def check_adapter_finite(self) -> None:
        """Refuse to go on (or to write a snapshot or checkpoint) with an adapter that holds NaN or inf.

        Raises:
            ValueError: a trainable tensor is not finite (the fit diverged).
        """
        for name, param in self.named_parameters():
            # a sum is finite only when every entry is: one reduction per tensor in the common case
            if not param.requires_grad or torch.isfinite(param.detach().sum()):
                continue
            bad = int((~torch.isfinite(param.detach())).sum())  # 0: the sum of finite entries overflowed
            if bad:
                step = self.trainer.global_step if self._trainer is not None else 0
                raise self._diverged(
                    step, f"{bad} of {param.numel()} entries of the adapter tensor {name} are NaN or inf"
                )

    def _diverged(self, step: int, what: str) -> InvalidValueError:
        """The one-line error of a fit whose loss or adapter became non-finite at (or by) training ``step``."""
        rate = self.optimizer_spec.learning_rate
        lower = min(rate / 10, 2e-4)
        return InvalidValueError(
            f"the fit diverged at training step {step}: {what}; no snapshot or checkpoint of it is written. "
            f"Likely cause: learning_rate={rate:g} is too high; lower it (e.g. {lower:g}, with warmup_ratio 0.1) "
            "and start the fit again in a fresh --trainer.default_root_dir"
        )

    # ------------------------------------------------------------------ checkpoints
    def adapter_state_keys(self) -> set[str]:
        """State-dict keys of the trainable parameters: all that a checkpoint stores."""
        return {name for name, param in self.named_parameters() if param.requires_grad}

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_adapter_finite()
        keep = self.adapter_state_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["adamergex"] = {
            "format": "adapter-only",
            "adapter_type": self.hparams.adapter_type,
            "adapter": adapter_signature(self.hparams.adapter_type, checkpoint["state_dict"]),
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        where = f"checkpoint {self.trainer.ckpt_path}" if self._trainer is not None else "the checkpoint"
        check_checkpoint_fits(
            checkpoint, self.hparams.adapter_type, self.state_dict(), self.adapter_state_keys(), where
        )
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        batches = int(progress.get("current", {}).get("completed", 0))
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        mid_epoch = batches > 0 and not progress.get("is_last_batch", True)
        # Lightning would only warn, and restart the epoch: the adapter would differ from an uninterrupted run
        if mid_epoch and datamodule is not None and type(datamodule).__qualname__ not in checkpoint:
            raise InvalidValueError(
                f"{where} was saved in the middle of epoch {checkpoint.get('epoch')} (after {batches} batches) "
                f"but holds no state of {type(datamodule).__name__}, so the fit cannot go on with the batches "
                "it had not trained on: the adapter would differ from an uninterrupted run; resume it with the "
                "DataModule it was trained with, or from a checkpoint of an epoch end"
            )
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        epochs = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        # the epochs the checkpoint has trained: an epoch-end checkpoint is saved before Lightning counts its epoch
        # as completed, but after it counts it as processed
        done = int(epochs.get("processed", epochs.get("completed", checkpoint.get("epoch", 0))))
        if (
            max_epochs is not None and max_epochs >= 0 and done > max_epochs
        ):  # Lightning: a traceback, or exit 0
            raise InvalidValueError(
                f"--trainer.max_epochs {max_epochs} is below the {done} epochs {where} has trained, where this fit "
                f"would resume; give a --trainer.max_epochs above {done} to train it further, or start a fresh fit "
                "without --ckpt_path"
            )
