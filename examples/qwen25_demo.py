"""``make demo``'s real-weights part: Qwen2.5-Coder-0.5B-Instruct (``--model qwen2.5-0.5b``) on real
text in one process, the model loaded once: RTN, SmoothQuant and MAS at W4A8 and W8A8 (held-out
perplexity on windows never calibrated on), then one answer from the FP model and one from the MAS
W4A8 artefact through the model's chat template.

    python -m examples.qwen25_demo                 # the settings make demo uses
    python -m examples.qwen25_demo --samples 16 --seq-len 256 --eval-samples 16 --epochs 2   # the README table's
"""

from __future__ import annotations

import argparse
import time
import warnings

MODEL = "qwen2.5-0.5b"
PROMPT = "What is the capital of France?"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="rtn,smoothquant,mas")
    ap.add_argument("--presets", default="w4a8,w8a8")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--out", default="runs/demo-qwen25")
    a = ap.parse_args(argv)
    import masq_jax
    from masq_jax.cli import print_table

    t0 = time.perf_counter()
    methods, presets = a.methods.split(","), a.presets.split(",")
    dest: dict[tuple[str, str], str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reps = masq_jax.quantize_many(MODEL, a.out, methods=methods, presets=presets, calib="text",
                                      samples=a.samples, eval_samples=a.eval_samples, seq_len=a.seq_len,
                                      epochs=a.epochs, overwrite=True, progress=False,
                                      on_report=lambda p, m, out, rep: dest.update({(p, m): out}))
    print(f"Qwen2.5-Coder-0.5B-Instruct (GGUF weights already AWQ-rounded to 4-5 bits), {a.samples} x {a.seq_len} "
          f"calibration tokens of text, perplexity on {a.eval_samples} other windows")
    for p in presets:
        print_table({m: reps[p, m] for m in methods})
    mas = dest.get((presets[0], "mas"))
    for label, model in (("full precision", MODEL), (f"MAS {presets[0].upper()} artefact", mas)):
        if model is None:
            continue
        print(f"\n{label}: {PROMPT}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            print("  " + masq_jax.api.generate_text(model, PROMPT, max_new_tokens=a.max_new_tokens).strip())
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
