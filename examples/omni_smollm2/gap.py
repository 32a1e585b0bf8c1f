"""The modality gap of omni-SmolLM2 (issue 17's "measure before claiming"): per layer and linear
input, the post-norm activation range of vision and audio tokens against text's.

    python -m examples.omni_smollm2.gap --encoders runs/omni-smollm2/encoders.safetensors --n 4
"""

from __future__ import annotations

import argparse
import json
import sys

from masq_jax.errors import MasqError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.omni_smollm2.gap", description=__doc__.split("\n")[0])
    ap.add_argument("--encoders", required=True, help="encoders.safetensors (from the training run)")
    ap.add_argument("--n", type=int, default=4, help="calibration-split examples per task")
    ap.add_argument("--layers", type=int, default=None, help="only the first N decoder layers")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import dataclasses

    import jax

    from masq_jax.families.omni_smollm2 import model as M
    from examples.omni_smollm2.calibset import task_calibset
    from masq_jax.families.omni_smollm2.checkpoint import load_encoders
    from masq_jax.eval import ranges

    try:
        enc = load_encoders(a.encoders)
    except (MasqError, OSError) as e:
        print(f"gap: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    cfg, llm = M.load_llm()
    if a.layers:
        cfg = dataclasses.replace(cfg, num_layers=a.layers)
        llm = {**llm, "layers": jax.tree.map(lambda x: x[: a.layers], llm["layers"])}
    table = ranges.activation_ranges(cfg, llm, task_calibset(cfg, llm, enc, "calib", a.n))
    summary = ranges.gap_summary(table)
    print(ranges.format_ranges(table))
    print("\nmedian over layers of absmax(modality) / absmax(text):")
    for name, row in summary.items():
        print(f"  {name:<8} vision {row['vision']:6.2f}x   audio {row['audio']:6.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"encoders": a.encoders, "n_per_task": a.n, "ranges": table, "summary": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
