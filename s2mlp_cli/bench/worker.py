"""`python -m s2mlp_cli.bench.worker`: one model at one batch size in its own process, spoken to in JSON
lines, so one model's allocations never bleed into another's numbers and a crash costs one row.

The spec comes on the first stdin line; then commands, one JSON line each. Replies: {"event": "built"}
| {"event": "ready", "batch_size"} | {"event": "times", ...} | {"event": "done", "row"}. A "done" row at
any point is final (unsupported, out of memory, an error, or the finished row). A worker never outlives
the `s2mlp bench` that started it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from s2mlp_cli.bench.measurement import Row, Spec, Worker, out_of_memory

PARENT_ENV = "S2MLP_BENCH_PARENT"  # the pid a worker lives and dies with


def main() -> int:
    _die_with_parent()
    spec = Spec.from_dict(json.loads(sys.stdin.readline()))

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    w = Worker(spec)
    try:
        if (final := w.build()) is not None:
            say({"event": "done", "row": final.to_dict()})
            return 0
        say({"event": "built"})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "prepare":
                if (final := w.prepare()) is not None:
                    say({"event": "done", "row": final.to_dict()})
                    return 0
                say({"event": "ready", "batch_size": w.row.batch_size})
            elif cmd["cmd"] == "time":
                try:
                    times = w.time(cmd["n"], bs1=cmd.get("bs1", False))
                except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
                    if not out_of_memory(e):
                        raise
                    row = Row(
                        spec.model,
                        status="oom",
                        detail=f"out of memory while timing at batch {spec.batch_size}",
                    )
                    say({"event": "done", "row": row.to_dict()})
                    return 0
                say({"event": "times", "times": times, "peak_memory_mib": w.peak_memory()})
            elif cmd["cmd"] == "finish":
                say({"event": "done", "row": w.finish().to_dict()})
                return 0
    except Exception as e:  # anything else still comes back as a row
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        say({"event": "done", "row": Row(spec.model, status="error", detail=detail).to_dict()})
    return 0


def _die_with_parent() -> None:
    """A worker must not outlive `s2mlp bench`, even one killed with SIGKILL: on Linux the kernel sends
    SIGKILL when the parent dies (PR_SET_PDEATHSIG); elsewhere, and as a backstop, a thread checks the
    parent every half second."""
    parent = int(os.environ.get(PARENT_ENV, os.getppid()))
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
