"""`run(TrainOptions(...))`: train a zoo model with a recipe, validating model and EMA after every epoch
with eval's own pipeline, writing checkpoints atomically; resumable to the step.

Built from timm's pieces: its training transform and Mixup/CutMix, `create_optimizer_v2` (which reads
the model's `no_weight_decay`), `create_scheduler_v2`, `ModelEmaV3`; DistributedDataParallel under
torchrun (NCCL on GPUs, gloo on CPUs). A signal (Ctrl-C, SIGTERM, SIGHUP) is taken at the next step
boundary on every process: the state is saved and the run exits 128 + the signal's number."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from s2mlp_cli import distributed, report
from s2mlp_cli.console import Bar, info
from s2mlp_cli.distributed import Shard
from s2mlp_cli.errors import Interrupted, ProblemsError, S2MLPError
from s2mlp_cli.evaluate.feed import Options as EvalLoop
from s2mlp_cli.evaluate.loop import Entry, evaluate
from s2mlp_cli.train import data
from s2mlp_cli.train.request import Plan, TrainOptions, plan
from s2mlp_cli.train.session import Session

Stop = Callable[[int, int], bool]  # (epoch, steps done in it) -> stop now, as if interrupted


@contextmanager
def _signals() -> Iterator[dict[str, int]]:
    """SIGINT, SIGTERM and SIGHUP set a flag the loop reads at step boundaries; a second signal stops at
    once (the last saved state stays)."""
    flag: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def note(signum: int, frame: Any) -> None:
        if flag:
            raise Interrupted(signum, "stopped at once by a second signal; the last saved state is kept")
        flag["signum"] = signum
        info(f"{signal.Signals(signum).name}: stopping after this step (a second signal stops at once)")

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, note) for s in sigs}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(opts: TrainOptions, stop: Stop | None = None, planned: Plan | None = None) -> dict[str, Any]:
    """Train; the result document `{"env", "results", "next"}`. Raises ProblemsError before any work
    when the request has problems, Interrupted after saving when stopped. `planned`: the request's
    `plan`, when the caller has made it already."""
    p, problems = (planned, []) if planned is not None else plan(opts)
    if problems or p is None:
        raise ProblemsError(problems)
    from s2mlp_cli.runtime import device_for, set_math_mode, threads_kept

    device = device_for(opts.device, opts.amp)
    set_math_mode(device, opts.tf32)
    shard = distributed.start(device)  # under torchrun the first process says what happens
    try:
        with threads_kept():  # the run sets its own (runtime.cpu_threads)
            return _train(p, opts, device, shard, stop)
    finally:
        distributed.teardown()


def _train(p: Plan, opts: TrainOptions, device: str, shard: Shard, stop: Stop | None) -> dict[str, Any]:
    from s2mlp_cli.runtime import environment

    if shard.world > 1:
        from s2mlp_cli.data.samples import fingerprint

        shard.agree("data", fingerprint(p.train.samples + p.val.samples))
    for note in p.notes:
        info(note)
    with Session.open(p, opts, device, shard) as session, _signals() as flag:
        _say_start(p, session, shard)
        epochs = p.recipe.epochs
        while session.epoch < epochs:
            _epoch(p, opts, session, shard, device, flag, stop)
        doc = report.document(environment(device, opts.amp, opts.tf32), [session.summary()])
        doc["env"].update(processes=shard.world, channels_last=opts.channels_last, compile=opts.compile)
        doc["env"].update(workers=session.workers, thread_rule=session.threads)
        doc["next"] = session.next_commands(opts)
    return doc


def _say_start(p: Plan, session: Session, shard: Shard) -> None:
    r = p.recipe
    among = f"; labels among ImageNet-1k's {p.num_classes}" if p.imagenet else ""
    info(f"train: {p.train.root} ({len(p.train.samples):,} images in {len(p.classes)} classes{among})")
    info(f"val: {p.val.root} ({p.val.layout})")
    info(
        f"recipe {r.name}: {r.epochs} epoch{'s' if r.epochs != 1 else ''}, global batch {r.batch_size} "
        f"({p.local_batch} per process x "
        f"{shard.world}), lr {r.lr:.4g}, {data.steps_per_epoch(len(p.train.samples), r.batch_size):,} steps "
        f"per epoch; every value and its source: {p.output / 'recipe.yaml'}"
    )
    info(f"cpu threads {session.threads}" if session.device == "cpu" else f"threads {session.threads}")
    if session.epoch or session.step:
        info(f"resuming at epoch {session.epoch + 1}, step {session.step}")


def _epoch(
    p: Plan,
    opts: TrainOptions,
    session: Session,
    shard: Shard,
    device: str,
    flag: dict[str, int],
    stop: Stop | None,
) -> None:
    """One epoch from the session's step on, then validation, checkpoints and the log line."""
    r, epoch = p.recipe, session.epoch
    steps = data.steps_per_epoch(len(p.train.samples), r.batch_size)
    session.scheduler.step(epoch)  # the learning rate of this epoch (timm's epoch-wise schedule)
    keys = data.batches(
        len(p.train.samples), r.batch_size, r.seed, epoch, session.step, shard.rank, shard.world
    )
    batches = session.feed.epoch(keys)
    session.bare.train()
    bar = Bar(
        desc=f"epoch {epoch + 1}/{r.epochs}",
        total=steps * r.batch_size,
        initial=session.step * r.batch_size,
        unit="img",
        enabled=opts.progress,
    )
    start = time.perf_counter()
    done = 0
    with bar:
        for x, y in batches:
            # drop path draws on the device's generator (the batch was mixed in its worker)
            data.seed_all(data.step_seed(r.seed, epoch, session.step, shard.rank), devices=device != "cpu")
            _step(session, opts, x, y, device)
            done += 1
            bar.advance(r.batch_size, done * r.batch_size / max(time.perf_counter() - start, 1e-9))
            signum = _stop_signal(flag, stop, epoch, session.step, shard, device)
            if signum:
                session.seconds += time.perf_counter() - start
                session.save_state()
                raise Interrupted(signum, session.kept(), next_step="resume")
    session.seconds += time.perf_counter() - start
    loss = session.epoch_loss(shard, device)
    if not math.isfinite(loss):
        raise S2MLPError(
            f"the training loss is {loss} in epoch {epoch + 1}: the run diverged (a lower learning rate, or "
            "bf16 instead of fp16, usually helps); the last good state is kept"
        )
    rows = _validate(p, opts, session, shard, device)
    session.end_epoch(loss, rows, steps)
    signum = _stop_signal(flag, stop, epoch + 1, 0, shard, device)
    if signum:  # the state of the finished epoch is saved
        raise Interrupted(signum, session.kept(), next_step="resume")


def _step(session: Session, opts: TrainOptions, x: Any, y: Any, device: str) -> None:
    """One optimizer step on a (mixed) batch: onto the device, forward, loss, backward, step."""
    import torch

    from s2mlp_cli.runtime import autocast

    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if opts.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, opts.amp):
        loss = session.loss_fn(session.forward(x), y)
    session.backward_and_step(loss)
    session.add_loss(loss)
    session.step += 1


def _stop_signal(
    flag: dict[str, int], stop: Stop | None, epoch: int, step: int, shard: Shard, device: str
) -> int:
    """The signal to stop for, agreed by every process (0: go on)."""
    signum = flag.get("signum", 0) or (int(signal.SIGINT) if stop is not None and stop(epoch, step) else 0)
    if shard.world > 1:
        import torch

        t = torch.tensor([signum], dtype=torch.int64, device=device)
        import torch.distributed as dist

        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        signum = int(t.item())
    return signum


def _validate(
    p: Plan, opts: TrainOptions, session: Session, shard: Shard, device: str
) -> dict[str, dict[str, Any]]:
    """Top-1 / top-5 / loss of the model and its EMA with eval's pipeline (the card's transform)."""
    entries = [Entry("model", session.bare.eval(), p.card.preprocess, "training")]
    if session.ema is not None:
        entries.append(Entry("ema", session.ema.module.eval(), p.card.preprocess, "training"))
    from s2mlp_cli.runtime import default_batch

    loop = EvalLoop(
        **opts.run_settings(device=device, compile=False),  # the models validated are not compiled
        batch_size=default_batch(device),
        workers=session.workers,
        cache=True,
        shard=shard,
    )
    results, _, _ = evaluate(p.val, entries, loop, progress=opts.progress)
    session.bare.train()
    return {r["model"]: {k: r[k] for k in ("top1", "top5", "loss", "images")} for r in results}
