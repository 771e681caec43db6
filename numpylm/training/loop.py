"""The training loop, part 2 of the guide: one function, read top to bottom, that trains every
neural model family in numpylm (MLP, RNN/LSTM/GRU, GPT) through their shared interface
`model(x, y) -> (logits, loss)`.

One step, with k = grad_accum micro-batches of B windows of T tokens each:

    lr    = schedule(step)                        warmup, then cosine decay (optim/schedules.py)
    grads = 0
    for each of the k micro-batches (x, y):
        grads += d(loss(x, y) / k) / d(params)    backward() adds into .grad
    clip the global gradient norm to grad_clip    (Pascanu et al. 2013)
    AdamW update; weight decay only on matrices   (Loshchilov & Hutter 2019)

Why divide by k: each micro-batch loss is a mean over its B*T targets, so the sum of the k
scaled losses is the mean over all k*B*T targets, the loss of one k-times larger batch, and
so are its gradients. Accumulation trades time for memory and changes nothing else (tested).

BLAS threads: a run takes the cores no other process keeps busy
(`numpylm.blas.free_core_threads`): every core on an idle machine, fewer when another process
is busy, where OpenBLAS's spinning threads would otherwise fight it for the cores and make
each product many times slower; `NUMPYLM_THREADS` (or `numpylm --threads`) overrides. A
product's sums may come out in another order with another thread count, so a resumed run is
bit-identical to one that never stopped when both parts ran with the same count: pin it with
`NUMPYLM_THREADS` where that matters (the resume tests do; 2 threads, then 1, differed).

Why weight decay only on parameters with two or more dimensions: decay pulls weights towards
zero to keep the matrices small; biases and LayerNorm gains are few, do not cause
overfitting, and a LayerNorm gain pulled to zero would switch its layer off.

Every `eval_interval` steps the loop estimates the validation loss (also in bits per
character or byte, so char and BPE models compare) and, given `out_dir`, saves a checkpoint.
A NaN or infinite loss, gradient or validation loss stops training at once, without saving,
so the last checkpoint on disk is the last good one. Ctrl-C (SIGINT) finishes the current
step, saves a checkpoint there and stops ("interrupted"); a second Ctrl-C during that save
is ignored, so the save completes. Resuming restores weights, optimiser moments, the step and
every random generator, so N steps + resume + M steps is bit-identical to N + M. The
learning-rate schedule is part of the run: resuming with a larger `steps` keeps the cosine
decay of the first run (`decay_steps`) and continues at `min_lr` after its end (the command
line says so when it happens).

What the loop trains on. Text: random windows of a `TokenData`'s ids. Anything else (the
conversations of supervised fine-tuning, padded or packed) is a *batch source*, an object
with `sample_batch(n, block_size, rng)` returning a tuple of arrays with n rows (inputs,
targets, anything else its loss needs), `batch_loss(model, *rows)`, `validation_loss(model,
config)` (None: nothing held out) and `record()` (what the checkpoint says about the data).
The loop draws the whole step's n = k*B rows from its own generator and splits them into the
k micro-batches, so a source resumes exactly like text does.

Frozen parameters (`requires_grad` False: the base under LoRA adapters) stay out of the
optimiser; with `save_frozen=False` a checkpoint keeps only the parameters that train, and
resuming loads those onto a model whose frozen part the caller has rebuilt.
"""
from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from numpylm.blas import free_core_threads, threads
from numpylm.models.llama_inference import release_layout
from numpylm.nn.layers import get_rng
from numpylm.nn.module import Module, evaluating
from numpylm.optim import AdamW, clip_grad_norm_, grad_norm, set_lr, warmup_cosine_lr
from numpylm.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from numpylm.tokenizers.base import Tokenizer
from numpylm.training.data import TokenData, data_record, get_batch

__all__ = ["BatchSource", "TrainConfig", "TrainResult", "estimate_loss", "make_optimizer",
           "train"]


class BatchSource(Protocol):
    """Training data other than one text's windows (see the module docstring)."""

    def sample_batch(self, n: int, block_size: int,
                     rng: np.random.Generator) -> Sequence[np.ndarray]: ...

    def batch_loss(self, model: Module, *rows: np.ndarray) -> Any: ...

    def validation_loss(self, model: Module, config: "TrainConfig") -> float | None: ...

    def record(self) -> dict[str, Any]: ...


@dataclass
class TrainConfig:
    """Settings of one training run. The defaults are nanoGPT's small CPU recipe."""

    steps: int = 2000              # optimiser updates
    batch_size: int = 12           # B: windows per micro-batch
    block_size: int = 64           # T: tokens per window (the context length)
    grad_accum: int = 1            # k: micro-batches per update (effective batch k*B)
    lr: float = 1e-3               # peak learning rate, reached after warmup
    min_lr: float = 1e-4           # floor of the cosine decay
    warmup_steps: int = 100        # linear warmup from lr/warmup_steps to lr
    decay_steps: int | None = None  # cosine length; None means until the last step
    weight_decay: float = 0.1      # AdamW decoupled decay, matrices only
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0         # max global gradient norm; 0 turns clipping off
    eval_interval: int = 250       # evaluate (and checkpoint) every this many steps
    eval_batches: int = 20         # random validation batches per evaluation
    log_interval: int = 10         # progress line every this many steps
    seed: int = 1337               # seeds the batch sampler
    out_dir: str | None = None     # checkpoint directory; None saves nothing
    max_seconds: float | None = None  # stop early after this much training time (the
                                      # schedule still runs over `steps`); None: no limit

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "block_size", "grad_accum", "eval_interval",
                     "eval_batches", "log_interval"):
            value = getattr(self, name)
            smallest = 0 if name == "steps" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
                raise ValueError(f"TrainConfig.{name} must be an integer >= {smallest}, "
                                 f"got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"TrainConfig.max_seconds must be > 0 or None, got {self.max_seconds!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")

    def lr_at(self, step: int) -> float:
        decay = self.decay_steps if self.decay_steps is not None else self.steps - self.warmup_steps
        return warmup_cosine_lr(step, self.lr, self.min_lr, self.warmup_steps, max(decay, 0))


@dataclass
class TrainResult:
    """What a run did: the final step, the loss history, and why it stopped."""

    step: int
    losses: list[float] = field(default_factory=list)            # training loss per step
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    stopped: str = "completed"               # or "nonfinite", "time" or "interrupted"
    message: str = ""
    checkpoint: str | None = None                                  # last checkpoint written


def make_optimizer(model: Module, config: TrainConfig) -> AdamW:
    """AdamW with two parameter groups: matrices decay, vectors (biases, norm gains) do not.
    Frozen parameters (requires_grad False) are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


def _random_states(model, batch_rng: np.random.Generator) -> dict[str, Any]:
    """Every generator the run draws from: the batch sampler, the layers' shared default
    generator (dropout without its own), and any module's own `rng`."""
    own = {name: m.rng.bit_generator.state for name, m in model.named_modules()
           if isinstance(getattr(m, "rng", None), np.random.Generator)}
    return {"batches": batch_rng.bit_generator.state,
            "nn_default": get_rng().bit_generator.state, "modules": own}


def _restore_random_states(model, batch_rng: np.random.Generator, states: dict[str, Any]) -> None:
    batch_rng.bit_generator.state = states["batches"]
    get_rng().bit_generator.state = states["nn_default"]
    modules = dict(model.named_modules())
    for name, state in states.get("modules", {}).items():
        modules[name].rng.bit_generator.state = state


def _all_finite(model) -> bool:
    return all(np.isfinite(p.data).all() for p in model.parameters())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def estimate_loss(model, ids: np.ndarray, batch_size: int, block_size: int, n_batches: int,
                  seed: int = 0) -> float:
    """Mean loss over `n_batches` random (batch_size, block_size) windows of `ids`.

    The windows come from a fresh generator seeded with `seed`, so two calls see the same
    windows and never disturb the training run's own random stream.
    """
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    rng = np.random.default_rng(seed)
    total = 0.0
    with evaluating(model):
        for _ in range(n_batches):
            x, y = get_batch(ids, batch_size, block_size, rng)
            total += float(model(x, y)[1].item())
    return total / n_batches



def train(model: Module, data: TokenData | BatchSource, config: TrainConfig, *,
          tokenizer: Tokenizer | None = None,
          model_family: str = "custom", model_args: dict[str, Any] | None = None,
          resume_from: str | Checkpoint | None = None,
          log: Callable[[str], None] = print, save_frozen: bool = True) -> TrainResult:
    """Train `model` on `data.train` (or a batch source's batches) for `config.steps`
    updates; see the module docstring.

    `tokenizer`, `model_family` and `model_args` go into checkpoints (needed when
    `config.out_dir` is set). `resume_from` is a checkpoint directory to continue from (or
    that checkpoint already loaded with `load_checkpoint(..., for_resume=True)`).
    `save_frozen=False` keeps the frozen parameters out of checkpoints.
    """
    if config.out_dir is not None and tokenizer is None:
        raise ValueError("train: saving checkpoints (config.out_dir) needs the tokenizer")
    run = _Run(model, data, config, tokenizer, model_family, model_args or {}, log, save_frozen)
    if resume_from is not None:
        run.resume(resume_from)
    model.train()
    with threads(free_core_threads()), _sigint_sets_flag() as interrupted:
        _loop(run, interrupted)
    return run.result


def _loop(run: "_Run", interrupted: threading.Event) -> None:
    config = run.config
    while run.step < config.steps:
        if interrupted.is_set():
            if config.out_dir is not None and run.step > run.first_step:
                run.save_checkpoint()
            run.stop("interrupted", "interrupted" + (
                f"; saved at step {run.step}, continue with --resume" if config.out_dir
                and run.result.checkpoint else ""))
            return
        loss, norm = run.train_step()            # lr, k micro-batches, clip: one update
        if not (math.isfinite(loss) and math.isfinite(norm)):
            run.stop_nonfinite(f"loss {loss}, gradient norm {norm}: not finite")
            break
        run.optimizer.step()
        run.step += 1
        run.result.step = run.step
        run.result.losses.append(loss)
        run.log_progress(loss)
        out_of_time = run.out_of_time()
        if run.step % config.eval_interval == 0 or run.step == config.steps or out_of_time:
            if not run.estimate_validation_loss():
                break
            if config.out_dir is not None and not run.save_checkpoint():
                break
        if out_of_time:
            run.stop("time", f"the time limit of {config.max_seconds:g} s is reached")
            break


@contextlib.contextmanager
def _sigint_sets_flag():
    """While training, Ctrl-C sets a flag that the loop reads between steps (so no step
    is left half done and the checkpoint is written whole) instead of raising at once."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted  # signal handlers belong to the main thread; leave them alone
        return

    def handler(signum, frame):
        interrupted.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)

class _Run:
    """The state of one training run and the steps `train` reads as a sketch."""

    def __init__(self, model: Module, data: TokenData, config: TrainConfig, tokenizer,
                 model_family: str, model_args: dict[str, Any],
                 log: Callable[[str], None], save_frozen: bool = True) -> None:
        self.model, self.data, self.config, self.log = model, data, config, log
        self.tokenizer, self.model_family, self.model_args = tokenizer, model_family, model_args
        release_layout(model)  # a step's sums never depend on a decoding layout (exact resume)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("train: no parameter requires a gradient (everything is frozen)")
        self.save_frozen = save_frozen
        self.optimizer = make_optimizer(model, config)
        self.batch_rng = np.random.default_rng(config.seed)
        self.step = 0
        self.result = TrainResult(step=0)
        self.t_start = time.perf_counter()
        self.first_step = 0

    def resume(self, resume_from: str | Checkpoint) -> None:
        """Restore weights, optimiser moments, the step and every random generator."""
        ckpt = (resume_from if isinstance(resume_from, Checkpoint)
                else load_checkpoint(resume_from, for_resume=True))
        if self.save_frozen:
            self.model.load_state_dict(ckpt.model_state)
        else:
            self._load_trained(ckpt)
        self.optimizer.load_state_dict(ckpt.optimizer_state)
        _restore_random_states(self.model, self.batch_rng, ckpt.trainer_state["random_states"])
        self.step = self.first_step = self.result.step = int(ckpt.trainer_state["step"])
        self.result.checkpoint = str(ckpt.path)
        self.log(f"resumed from {ckpt.path} at step {self.step}")
        saved = ckpt.trainer_state.get("train_config", {})
        changed = sorted(k for k, v in asdict(self.config).items()
                         if k in saved and saved[k] != v
                         and k not in ("steps", "out_dir", "max_seconds"))
        if changed:
            self.log(f"note: {', '.join(changed)} differ from the checkpoint's settings, so "
                     f"this is not the run the checkpoint came from")

    def _load_trained(self, ckpt: Checkpoint) -> None:
        """Load a checkpoint that holds only the parameters that train: every one of them
        must be there, and nothing else."""
        trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
        report = self.model.load_state_dict(ckpt.model_state, strict=False)
        missing = sorted(trained - set(ckpt.model_state))
        if missing or report["unexpected"] or report["mismatched"]:
            raise ValueError(f"checkpoint {ckpt.path}: its parameters do not fit the model's "
                             f"trained ones (missing: {missing[:4]}, unexpected: "
                             f"{report['unexpected'][:4]}, mis-shaped: "
                             f"{report['mismatched'][:4]})")

    def model_state(self) -> dict[str, np.ndarray]:
        if self.save_frozen:
            return self.model.state_dict()
        return {n: p.data for n, p in self.model.named_parameters() if p.requires_grad}

    def train_step(self) -> tuple[float, float]:
        """Set the learning rate, accumulate the gradients of k micro-batches, clip them;
        return (mean loss, gradient norm before clipping). The update itself is left to
        the caller, who first checks that both are finite."""
        config, k = self.config, self.config.grad_accum
        self.lr = set_lr(self.optimizer, config.lr_at(self.step))
        # One batch of k*B windows, split into k micro-batches: the same windows whatever k is.
        sample = getattr(self.data, "sample_batch", None)
        if sample is None:
            rows = get_batch(self.data.train, k * config.batch_size, config.block_size,
                             self.batch_rng)
        else:
            rows = sample(k * config.batch_size, config.block_size, self.batch_rng)
        self.optimizer.zero_grad()
        loss_sum = 0.0
        for part in zip(*(np.split(np.asarray(a), k) for a in rows)):
            loss = (self.model(*part)[1] if sample is None
                    else self.data.batch_loss(self.model, *part))
            (loss * (1.0 / k)).backward()
            loss_sum += loss.item()
        if config.grad_clip > 0:
            norm = clip_grad_norm_(self.params, config.grad_clip)  # the norm before clipping
        else:
            norm = grad_norm(self.params)
        return loss_sum / k, norm

    def log_progress(self, loss: float) -> None:
        config, step = self.config, self.step
        if step % config.log_interval and step != config.steps:
            return
        now = time.perf_counter()
        steps_here = step - self.first_step
        tokens_per_step = config.grad_accum * config.batch_size * config.block_size
        rate = tokens_per_step * steps_here / max(now - self.t_start, 1e-9)
        eta = (config.steps - step) * (now - self.t_start) / steps_here
        if config.max_seconds is not None:  # the time cap may come first
            eta = min(eta, max(config.max_seconds - (now - self.t_start), 0.0))
        self.log(f"step {step}/{config.steps} | loss {loss:.4f} | lr {self.lr:.2e} | "
                 f"{rate:,.0f} tok/s | ETA {_duration(eta)}")

    def out_of_time(self) -> bool:
        config = self.config
        return (config.max_seconds is not None and self.step < config.steps
                and time.perf_counter() - self.t_start >= config.max_seconds)

    def estimate_validation_loss(self) -> bool:
        """Log the validation loss; False (and stop) if it or the parameters are not finite."""
        config, data = self.config, self.data
        if not _all_finite(self.model):
            self.stop_nonfinite("the parameters are no longer finite; not saving")
            return False
        if hasattr(data, "validation_loss"):  # a batch source measures its own held-out part
            with evaluating(self.model):
                val = data.validation_loss(self.model, config)
            if val is None:
                return True
        elif len(data.val) <= config.block_size:
            return True
        else:
            # A generator of its own, seeded the same each time: the same windows at every
            # evaluation, and the training batches never depend on when we evaluated.
            val = estimate_loss(self.model, data.val, config.batch_size, config.block_size,
                                config.eval_batches, seed=config.seed + 1)
        if not math.isfinite(val):
            self.stop_nonfinite(f"validation loss {val}: not finite; not saving")
            return False
        self.result.val_losses.append((self.step, val))
        per_text = (f" | {data.val_bits_per_char(val):.4f} bits/char | "
                    f"{data.val_bits_per_byte(val):.4f} bits/byte"
                    if isinstance(data, TokenData) else "")
        self.log(f"step {self.step}: val loss {val:.4f}{per_text}")
        return True

    def save_checkpoint(self) -> bool:
        """Save the run (False, and stop, if the parameters are no longer finite). Ctrl-C
        during the save only sets the flag the loop reads: the save itself completes."""
        if not _all_finite(self.model):
            self.stop_nonfinite("the parameters are no longer finite; not saving")
            return False
        config, step = self.config, self.step
        trainer_state = {"step": step, "random_states": _random_states(self.model, self.batch_rng),
                         # The text's absolute path and fingerprint, so that resume and
                         # eval can check they read the same text.
                         "data": {**(self.data.record() if hasattr(self.data, "record")
                                     else data_record(self.data)),
                                  # Windows are drawn at random, so the position in the data
                                  # is the state of the "batches" generator above.
                                  "windows_drawn": step * config.grad_accum * config.batch_size},
                         "train_config": asdict(config)}
        save_checkpoint(config.out_dir, model_family=self.model_family,
                        model_args=self.model_args, model_state=self.model_state(),
                        tokenizer=self.tokenizer, optimizer_state=self.optimizer.state_dict(),
                        trainer_state=trainer_state)
        self.result.checkpoint = config.out_dir
        return True

    def stop_nonfinite(self, what: str) -> None:
        kept = (f"the last good checkpoint is {self.result.checkpoint}" if self.result.checkpoint
                else "no checkpoint was written")
        self.stop("nonfinite", f"{what}; stopping ({kept}). Try a lower learning rate or "
                               f"grad_clip.")

    def stop(self, why: str, message: str) -> None:
        self.result.stopped = why
        self.result.message = (f"step {self.step}/{self.config.steps}: {message}"
                               if why == "time" else f"step {self.step}: {message}")
        self.log(self.result.message)
