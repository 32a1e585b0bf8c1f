"""Qwen2.5-Coder-0.5B-Instruct (``--model qwen2.5-0.5b``) on real text: the quality table and the
calibration speed of issue 30, on a CPU.

    python benchmarks/qwen25.py table --grid w4a8:rtn,smoothquant,mas w8a8:rtn,smoothquant,mas
    python benchmarks/qwen25.py table --show                 # print what results.jsonl holds
    python benchmarks/qwen25.py speed                        # MAS W4A8, 16 x 256 tokens, 2 epochs
    python benchmarks/qwen25.py speed --report runs/x/report.json   # the same table from a finished run

``table``: held-out perplexity of each (preset, method) — calibration on ``--samples`` windows of the
stdlib-docstring corpus (``--calib text``), evaluation on ``--eval-samples`` other windows (disjoint:
never used for calibration; 16 x 256 = 4096 tokens by default) — with the FP figure, the ratio to it
and the wall seconds of each run. Each row is appended to ``--results`` (JSON lines) as soon as it is
measured, and rows already there are skipped, so the grid can be extended run by run on a shared CPU.
The GGUF's weights were AWQ-quantized (4-5 bit) before conversion: every W4 row rounds them again.

``speed``: seconds per layer per stage (statistics + training per layer from report.json's layer rows,
export and evaluation per layer from its stages), the first layer's extra time against the median of
the others (what compilation costs), and peak host memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

MODEL = "qwen2.5-0.5b"
W4_NOTE = "(weights already carry one AWQ 4-5 bit rounding from the GGUF)"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def table(a) -> None:
    import masq_jax

    results = Path(a.results)
    done = {(r["preset"], r["method"]) for r in _rows(results)}
    for cell in [] if a.show else a.grid:
        preset, methods = cell.split(":")
        for method in methods.split(","):
            if (preset, method) in done:
                continue
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rep = masq_jax.quantize(MODEL, str(Path(a.out) / f"{preset}-{method}"), method=method,
                                        preset=preset, calib="text", samples=a.samples, eval_samples=a.eval_samples,
                                        seq_len=a.seq_len, epochs=a.epochs, overwrite=True, progress=False)
            row = {"preset": preset, "method": method, "ppl": rep["perplexity"]["quantized"],
                   "fp": rep["perplexity"]["fp"], "sqnr_db": rep["sqnr"]["mean"]["all"],
                   "seconds": round(time.perf_counter() - t0, 1), "stages": rep["stages"],
                   "settings": {"samples": a.samples, "eval_samples": a.eval_samples, "seq_len": a.seq_len,
                                "epochs": a.epochs}}
            results.parent.mkdir(parents=True, exist_ok=True)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{preset} {method:<15} PPL {row['ppl']:.3f} (FP {row['fp']:.3f}) {row['seconds']:.0f} s", flush=True)
    rows = _rows(results)
    if not rows:
        print("no results yet")
        return
    fp = rows[0]["fp"]
    s = rows[0]["settings"]
    print(f"\nQwen2.5-Coder-0.5B-Instruct, {s['samples']} calibration x {s['seq_len']} tokens, {s['epochs']} epoch(s); "
          f"held-out perplexity on {s['eval_samples']} x {s['seq_len']} tokens; FP {fp:.3f}")
    print(f"{'preset':<8}{'method':<16}{'PPL':>9}{'vs FP':>9}{'SQNR dB':>9}{'seconds':>9}")
    for r in rows:
        note = f"  {W4_NOTE}" if r["preset"].startswith("w4") else ""
        print(f"{r['preset']:<8}{r['method']:<16}{r['ppl']:>9.3f}{r['ppl'] / fp:>8.3f}x{r['sqnr_db']:>9.2f}"
              f"{r['seconds']:>9.0f}{note}")
    if a.markdown:
        print("\n" + markdown(rows))


def markdown(rows: list[dict]) -> str:
    """Presets x methods: held-out PPL (ratio to FP, seconds); '—' where unmeasured."""
    fp = rows[0]["fp"]
    order = ("rtn", "smoothquant", "smoothquant_pm", "awq", "mbq", "mas", "masquant")
    methods = sorted(dict.fromkeys(r["method"] for r in rows), key=lambda m: order.index(m) if m in order else 99)
    cells = {(r["preset"], r["method"]): r for r in rows}
    out = ["| preset | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        line = []
        for m in methods:
            r = cells.get((preset, m))
            line.append("—" if r is None else f"{r['ppl']:.3f} ({r['ppl'] / fp - 1:+.1%}, {r['seconds']:.0f} s)")
        out.append(f"| {preset.upper()}{' (g128)' if preset == 'w4a16' else ''} | " + " | ".join(line) + " |")
    return "\n".join(out) + f"\n\nFP {fp:.3f}; each cell: held-out PPL (vs FP, wall seconds of the run)."


def speed(a) -> None:
    if a.report:
        rep = json.loads(Path(a.report).read_text())
    else:
        import masq_jax

        rep = masq_jax.quantize(MODEL, a.out, method="mas", preset="w4a8", calib="text", samples=16, seq_len=256,
                                eval_samples=a.eval_samples, epochs=2, overwrite=True, progress=False)
    st, layers = rep["stages"], rep["layers"]
    n = len(layers)
    per = [r["seconds"] for r in layers]
    steady = statistics.median(per[1:])
    print(f"MAS W4A8 on {MODEL}, {n} layers, 16 x 256 tokens, 2 epochs")
    print(f"{'stage':<34}{'total s':>9}{'s/layer':>9}")
    for name, v in st.items():
        if name != "total_seconds":
            print(f"{name:<34}{v['seconds']:>9.1f}{v['seconds'] / n:>9.2f}")
    print(f"{'total':<34}{st['total_seconds']:>9.1f}{st['total_seconds'] / n:>9.2f}")
    print(f"layer step (statistics + training + propagation): first {per[0]:.1f} s, median of the others "
          f"{steady:.1f} s; compilation ~ first - median = {per[0] - steady:.1f} s "
          f"({(per[0] - steady) / sum(per):.1%} of the layer steps)")
    peak = max(v.get("peak_host_bytes", 0) for k, v in st.items() if k != "total_seconds")
    print(f"peak host memory {peak / 2**30:.2f} GiB; held-out PPL {rep['perplexity']['quantized']:.3f} "
          f"(FP {rep['perplexity']['fp']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    t = sub.add_parser("table")
    t.add_argument("--grid", nargs="*", default=["w4a8:rtn,smoothquant,mas", "w8a8:rtn,smoothquant,mas"],
                   help="PRESET:METHOD,METHOD ... (e.g. w4a16:rtn,awq,mbq,mas)")
    t.add_argument("--show", action="store_true", help="only print the table of --results")
    t.add_argument("--markdown", action="store_true", help="also print it as a markdown table (presets x methods)")
    t.add_argument("--samples", type=int, default=16)
    t.add_argument("--eval-samples", type=int, default=16)
    t.add_argument("--seq-len", type=int, default=256)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--results", default="benchmarks/results/qwen25_quality.jsonl")
    t.add_argument("--out", default="runs/bench-qwen25")
    s = sub.add_parser("speed")
    s.add_argument("--report", default=None, help="a finished run's report.json instead of a new run")
    s.add_argument("--eval-samples", type=int, default=16)
    s.add_argument("--out", default="runs/bench-qwen25/speed")
    a = ap.parse_args()
    table(a) if a.part == "table" else speed(a)


if __name__ == "__main__":
    main()
