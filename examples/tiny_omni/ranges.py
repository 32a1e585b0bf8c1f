"""Per-modality activation ranges at the tiny omni decoder's linear inputs (the paper's Figure 1/4
quantity): how large vision and audio run against text, channel by channel.

    python -m examples.tiny_omni.ranges --fp checkpoints/tiny-omni --calib checkpoints/tiny-omni/calib.npz
"""

from __future__ import annotations

import argparse
import json
import sys

from masq_jax.errors import MasqError
from masq_jax.eval import ranges


def activation_ranges(fp_dir: str, calib_npz: str) -> dict:
    """``masq_jax.eval.ranges.activation_ranges`` of the FP checkpoint ``fp_dir`` on a CalibSet file."""
    from masq_jax.calib import CalibSet
    from masq_jax.models import load_params

    cfg, params = load_params(fp_dir)
    return ranges.activation_ranges(cfg, params, CalibSet.load(calib_npz))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.tiny_omni.ranges", description=__doc__.split("\n")[0])
    ap.add_argument("--fp", default="checkpoints/tiny-omni", help="the FP tiny-omni checkpoint")
    ap.add_argument("--calib", default="checkpoints/tiny-omni/calib.npz", help="a CalibSet of the model's inputs")
    ap.add_argument("--json", default=None, help="write the ranges as JSON here")
    a = ap.parse_args(argv)
    try:
        table = activation_ranges(a.fp, a.calib)
    except (MasqError, OSError) as e:  # bad input, or a file it cannot read
        print(f"ranges: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(ranges.format_ranges(table))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"calib": a.calib, "ranges": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
