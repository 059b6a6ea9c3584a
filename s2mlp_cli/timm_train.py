"""Run a timm script (train.py, validate.py, ...) with our models registered in timm.

    python -m s2mlp_cli.timm_train path/to/timm/train.py /data/imagenet --model s2mlpv2_small ...
    torchrun --nproc-per-node 8 -m s2mlp_cli.timm_train path/to/timm/train.py ...

The same as putting `import s2mlp_cli.models` at the top of the script: the script runs as `__main__`
with the remaining arguments, so its own argument parsing, distributed setup and outputs are unchanged.
"""

import runpy
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    script = Path(argv[0])
    if not script.is_file():
        print(f"error: {script}: no such script (give the path to timm's train.py)", file=sys.stderr)
        raise SystemExit(2)
    import s2mlp_cli.models  # noqa: F401 (registers our models with timm)

    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.resolve().parent))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
