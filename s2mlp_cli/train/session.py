"""A training run's moving parts (model, EMA, optimizer, schedule, scaler, Mixup, loss) and where it
stands (epoch, step, best), built fresh or from a saved state; and what it writes at each epoch's end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s2mlp_cli.console import duration, info
from s2mlp_cli.distributed import Shard
from s2mlp_cli.errors import S2MLPError
from s2mlp_cli.files import file_sha256, flock, sweep_atomic, write_text_atomic
from s2mlp_cli.runtime import compiled, use_cpu_threads
from s2mlp_cli.train import data, state
from s2mlp_cli.train.request import Plan, TrainOptions, class_metadata


class Session:
    def __init__(self, p: Plan, opts: TrainOptions, device: str, shard: Shard) -> None:
        import torch
        from timm.utils import ModelEmaV3

        from s2mlp_cli import arch

        self.p, self.opts, self.device, self.shard = p, opts, device, shard
        r = p.recipe
        self.rank0 = shard.rank == 0
        cores = max(1, (os.cpu_count() or 1) // shard.world)
        self.workers = min(8, cores) if opts.workers is None else min(opts.workers, cores)
        self.threads = use_cpu_threads(device, self.workers, shard.world, opts.threads)
        mixup, self.loss_fn = mixing(r, p.num_classes)
        self.feed = data.Feed.of(p.train.samples, r, p.card.preprocess, mixup, self.workers, device == "cuda")
        data.seed_all(data.seed_of(r.seed, -1))  # the initial weights
        model = arch.create(p.card, num_classes=p.num_classes, drop_path_rate=r.drop_path)
        self.head_reset = False
        if opts.init is not None and not opts.resume:
            self.head_reset = _load_init(model, Path(opts.init).expanduser())
        model = model.to(device)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if opts.grad_checkpointing:
            model.set_grad_checkpointing(True)
        self.bare = model
        self.ema = ModelEmaV3(model, decay=r.ema_decay) if r.ema else None
        self.optimizer, self.scheduler = _optimization(model, r)
        self.scaler = torch.amp.GradScaler("cuda") if opts.amp == "fp16" else None
        self.epoch, self.step, self.seconds = 0, 0, 0.0
        self.loss_sum, self.loss_steps = 0.0, 0
        self._loss = torch.zeros((), dtype=torch.float64, device=device)  # this epoch's, on the device
        self.best: dict[str, Any] = {}
        self.log: list[dict[str, Any]] = []
        self.net = model
        if shard.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                model, device_ids=[shard.local_rank] if device == "cuda" else None
            )
        self.forward = compiled(self.net) if opts.compile else self.net

    # --- opening: a fresh run or a resumed one, in a folder we own, one run at a time ----------------

    @classmethod
    @contextmanager
    def open(cls, p: Plan, opts: TrainOptions, device: str, shard: Shard) -> Iterator[Session]:
        output = p.output
        if shard.rank == 0:
            state.mark(output, p.card.name)
        with flock(output / ".lock", wait=True) if shard.rank == 0 else _held() as held:
            if not held:
                raise S2MLPError(f"{output}: another run is using this folder", param="output")
            if shard.rank == 0 and (swept := sweep_atomic(output, WRITTEN)):
                info(f"{output}: removed {len(swept)} half-written file(s) a stopped run left")
            session = cls(p, opts, device, shard)
            if opts.resume:
                session._resume()
            elif shard.rank == 0:
                write_text_atomic(output / "recipe.yaml", p.recipe.to_yaml())
                if session.head_reset:
                    info(f"init: {opts.init} has another number of classes: the head starts fresh")
            yield session

    def _resume(self) -> None:
        saved = state.load_state(self.p.output)
        steps = data.steps_per_epoch(len(self.p.train.samples), self.p.recipe.batch_size)
        ema = self.ema.module if self.ema is not None else None
        for key, mine in (("variant", self.p.card.name), ("classes", self.p.classes)):
            if saved.get(key) != mine:
                what = "class folders" if key == "classes" else "variant"
                raise S2MLPError(
                    f"{self.p.output} is a run of another {what} ({key} differs); resume it as it was "
                    "started",
                    param="output",
                )
        state.check_state(saved, self.bare, ema, self.p.recipe.values, steps, self.p.output / state.STATE)
        self.bare.load_state_dict(saved["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(saved["ema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.epoch, self.step, self.seconds = saved["epoch"], saved["step"], saved["seconds"]
        self.loss_sum, self.loss_steps = saved["loss_sum"], saved["loss_steps"]
        self.best = dict(saved["best"])
        state.restore_rng(saved["rng"])
        self.log = state.read_log(self.p.output, self.epoch)

    # --- the steps -------------------------------------------------------------------------------------

    def backward_and_step(self, loss: Any) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.bare)

    def add_loss(self, loss: Any) -> None:
        self._loss += loss.detach().double()  # no host sync per step
        self.loss_steps += 1

    def _loss_so_far(self) -> float:
        return self.loss_sum + float(self._loss)

    def epoch_loss(self, shard: Shard, device: str) -> float:
        """This epoch's mean training loss over every process."""
        import torch

        t = shard.sum(
            torch.tensor([self._loss_so_far(), float(self.loss_steps)], dtype=torch.float64, device=device)
        )
        return float(t[0] / max(t[1], 1))

    # --- what is written ------------------------------------------------------------------------------

    def save_state(self) -> None:
        """Everything a resume needs, as of the current step (written by the first process)."""
        if not self.rank0:
            return
        state.save_state(
            self.p.output,
            {
                "variant": self.p.card.name,
                "classes": self.p.classes,
                "num_classes": self.p.num_classes,
                "recipe": self.p.recipe.values,
                "epoch": self.epoch,
                "step": self.step,
                "seconds": self.seconds,
                "loss_sum": self._loss_so_far(),
                "loss_steps": self.loss_steps,
                "best": self.best,
                "model": self.bare.state_dict(),
                "ema": self.ema.module.state_dict() if self.ema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            },
        )

    def end_epoch(self, loss: float, val: dict[str, dict[str, Any]], steps: int) -> None:
        """Checkpoints, state and log for the epoch just validated; then the next epoch starts at step 0."""
        r, epoch = self.p.recipe, self.epoch
        rate = steps * r.batch_size / self.seconds if self.seconds > 0 else None
        candidates = [("model", val["model"]["top1"])]
        if "ema" in val:
            candidates.append(("ema", val["ema"]["top1"]))
        which, top1 = max(candidates, key=lambda c: c[1] if c[1] is not None else -1.0)
        improved = top1 is not None and top1 > self.best.get("top1", -1.0)
        row = {
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": round(loss, 5),
            "images_per_s": None if rate is None else round(rate, 1),
            "seconds": round(self.seconds, 2),
            "val": val["model"],
            "ema_val": val.get("ema"),
            "best": improved,
        }
        if improved:
            self.best = {"top1": top1, "top5": val[which]["top5"], "epoch": epoch, "from": which}
            row["best_from"] = which
        self.log.append(row)
        if self.rank0:
            meta = {"variant": self.p.card.name, "epoch": str(epoch), **class_metadata(self.p)}
            out = self.p.output
            state.save_weights(out / "last.safetensors", self.bare.state_dict(), {**meta, "from": "model"})
            if improved:
                chosen = self.ema.module if which == "ema" else self.bare
                state.save_weights(out / "best.safetensors", chosen.state_dict(), {**meta, "from": which})
        self.epoch, self.step, self.seconds = epoch + 1, 0, 0.0
        self.loss_sum, self.loss_steps = 0.0, 0
        self._loss.zero_()
        self.save_state()
        if self.rank0:
            state.write_log(self.p.output, self.log)
            if self.opts.plot:
                state.draw_curves(self.p.output, self.log, f"{self.p.card.name}: {self.p.recipe.name} recipe")
        info(_epoch_line(row, r.epochs, self.log))

    def kept(self) -> str:
        return f"saved a resumable state in {self.p.output} at epoch {self.epoch + 1}, step {self.step}"

    def summary(self) -> dict[str, Any]:
        best = self.p.output / "best.safetensors"
        last = self.log[-1] if self.log else {}
        return {
            "model": self.p.card.name,
            "status": "ok",
            "output": str(self.p.output),
            "epochs": self.epoch,
            "classes": self.p.num_classes,
            "best_top1": self.best.get("top1"),
            "best_top5": self.best.get("top5"),
            "best_epoch": None if "epoch" not in self.best else self.best["epoch"] + 1,
            "best_from": self.best.get("from"),
            "last_top1": (last.get("val") or {}).get("top1"),
            "weights": str(best),
            "weights_sha256": file_sha256(best) if best.is_file() else None,
        }

    def next_commands(self, opts: TrainOptions) -> list[str]:
        """How to evaluate and publish the best weights (a run on its own classes: on its val folders)."""
        name, best = (
            self.p.card.aliases[0] if self.p.card.aliases else self.p.card.name,
            self.p.output / "best.safetensors",
        )
        result = self.p.output / "eval.json"
        return [
            f"s2mlp eval --variant {name} --weights {best} --data {self.p.val.root} --output {result}",
            f"s2mlp push {name} --weights {best} --repo ORG/NAME --eval {result}",
        ]


# every file a run writes into its folder, each atomically (a kill mid-write leaves `.NAME.xxxx.tmp`)
WRITTEN = (
    "last.safetensors",
    "best.safetensors",
    "state.pt",
    "log.jsonl",
    "recipe.yaml",
    "curves.png",
    ".s2mlp-train",
)


FUSED = ("adam", "adamw")  # timm builds these from torch.optim, which takes fused=True


def _optimization(model: Any, r: Any) -> tuple[Any, Any]:
    """The recipe's optimizer (timm's, which reads the model's no_weight_decay) and epoch-wise schedule."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    # torch's own Adam/AdamW as one fused kernel (CPU and CUDA): the same update, a step 7x shorter
    # on a small model's many tensors than the per-tensor loop torch picks on the CPU
    fused = {"fused": True} if r.opt in FUSED else {}
    try:
        optimizer = create_optimizer_v2(model, opt=r.opt, lr=r.lr, weight_decay=r.weight_decay, **fused)
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=r.sched,
            num_epochs=r.epochs,
            warmup_epochs=r.warmup_epochs,
            warmup_lr=r.warmup_lr,
            min_lr=r.min_lr,
        )
    except (AssertionError, ValueError, KeyError) as e:
        raise S2MLPError(
            f"timm cannot build the recipe's optimizer or schedule: {e}", param="overrides"
        ) from None
    return optimizer, scheduler


def mixing(r: Any, num_classes: int) -> tuple[Any, Any]:
    """Mixup/CutMix (None when off) and the loss that goes with it: soft targets, smoothing, or plain."""
    import torch
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if r.mixing():
        mixup = Mixup(
            mixup_alpha=r.mixup,
            cutmix_alpha=r.cutmix,
            prob=r.mixup_prob,
            switch_prob=r.mixup_switch_prob,
            mode=r.mixup_mode,
            label_smoothing=r.smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if r.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=r.smoothing)
    return None, torch.nn.CrossEntropyLoss()


@contextmanager
def _held() -> Iterator[bool]:
    yield True


def _load_init(model: Any, path: Path) -> bool:
    """Starting weights; True when their head had another number of classes (and the model's stays)."""
    from s2mlp_cli import api
    from s2mlp_cli.weights import HEAD, read_state_dict

    sd = read_state_dict(path)
    mine = model.state_dict()
    reset = any(HEAD.match(k) and k in mine and v.shape != mine[k].shape for k, v in sd.items())
    model.load_state_dict(api.fit(model, sd, path.name, reset_head=True))
    return reset


def _epoch_line(row: dict[str, Any], epochs: int, log: list[dict[str, Any]]) -> str:
    val, ema = row["val"], row.get("ema_val")
    done = row["epoch"] + 1
    per = sum(r["seconds"] for r in log) / len(log)
    eta = duration(per * (epochs - done))
    parts = [
        f"epoch {done}/{epochs}",
        f"loss {row['train_loss']:.4f}",
        f"top-1 {_pct(val['top1'])}" + (f" (EMA {_pct(ema['top1'])})" if ema else ""),
        f"{row['images_per_s'] or 0:,.0f} img/s",
        f"lr {row['lr']:.3g}",
    ]
    if row["best"]:
        parts.append(f"best so far ({row.get('best_from')})")
    if done < epochs:
        parts.append(f"ETA {eta}")
    return ", ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a (non-finite logits)" if value is None else f"{value:.2f}%"
