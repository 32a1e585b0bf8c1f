"""``python -m masq_jax.calib``: build a calibration set into one .npz, or describe one.

    python -m masq_jax.calib build SOURCE --out calib.npz [--model DIR] [--samples N] [--seq-len L]
    python -m masq_jax.calib info calib.npz

Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .calibset import CalibSet
from .errors import CalibError
from .load import SOURCE_FORMS, load_calib


def _describe(cs: CalibSet) -> dict:
    return {
        "samples": len(cs), "kind": cs.kind, "rope_ndim": cs.rope_ndim, "hidden_size": cs.hidden_size,
        "min_len": int(cs.lengths.min()), "max_len": cs.max_len, "tokens": cs.token_counts(),
        "fingerprint": cs.fingerprint()[:16],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m masq_jax.calib", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a calibration set and save it as one .npz")
    b.add_argument("source", help=f"calibration source: {SOURCE_FORMS}")
    b.add_argument("--out", required=True, help="output .npz path")
    b.add_argument("--model", default=None, help="checkpoint folder (tokenizer / processor / encoders / config)")
    b.add_argument("--tokenizer", default=None, help="tokenizer folder or .gguf file (text sources)")
    b.add_argument("--samples", type=int, default=128)
    b.add_argument("--seq-len", type=int, default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--cache-dir", default=None)
    b.add_argument("--video-as-vision", action="store_true", help="label video placeholder tokens vision (default: text)")
    i = sub.add_parser("info", help="validate a .npz and print its shape and per-modality token counts")
    i.add_argument("path")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            cs = load_calib(a.source, model_dir=a.model, tokenizer=a.tokenizer, samples=a.samples,
                            seq_len=a.seq_len, seed=a.seed, cache_dir=a.cache_dir, video_as_vision=a.video_as_vision)
            cs.save(a.out)
            print(json.dumps({"out": a.out, **_describe(cs)}))
        else:
            print(json.dumps(_describe(CalibSet.load(a.path))))
    except CalibError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
