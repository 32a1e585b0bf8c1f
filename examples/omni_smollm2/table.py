"""The omni-SmolLM2 quantization table (issue 17): per preset and method, the task metrics by
generation on a fresh test sample, text perplexity on real English text, and the mean decoder-layer
SQNR per modality on test-split prompts — none of which the calibration saw.

    python -m examples.omni_smollm2.table --model checkpoints/omni-smollm2 --out runs/omni-smollm2-table \\
        --presets w4a8 --methods rtn,smoothquant,mbq,mas,masquant --ranks 0.02,0.05,0.1,0.25

Calibration: ``--calib-n`` teacher-forced prompts per media task from the calib split (its strings
and numbers are disjoint from the test split's by construction). Tasks: ``--test-n`` examples per
task from the test split, generator seed ``--seed``. Everything goes through the public pipeline
(``masq_jax.api.quantize`` / ``evaluate`` / ``evaluate_tasks``), so each artefact under ``--out``
can be re-evaluated with ``masq eval``. ``table.json`` and ``table.md`` hold the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from masq_jax.errors import MasqError

# Columns: (label, tasks-summary key, metric kind) — accuracies up, error rates down.
TASK_COLUMNS = (("OCR EM", "ocr (exact)"), ("OCR CER", "ocr (cer)"), ("ASR WER", "asr"), ("match", "match"),
                ("copy", "copy"))
SQNR_COLUMNS = ("text", "vision", "audio")


def write_calib(model: str, out: Path, split: str, n: int, seed: int) -> Path:
    """The task prompts of ``split`` (encoders applied) as a CalibSet ``.npz`` the pipeline reads."""
    from masq_jax.calib import save_npz
    from examples.omni_smollm2.calibset import task_calibset
    from masq_jax.families.omni_smollm2.checkpoint import ENCODERS, load_checkpoint_dir, load_encoders

    cfg, llm = load_checkpoint_dir(model)
    path = out / f"{split}_prompts.npz"
    save_npz(task_calibset(cfg, llm, load_encoders(Path(model) / ENCODERS), split, n, seed), path)
    return path


def run_table(model: str, out: str | Path, presets: list[str], methods: list[str], ranks: list[float], *,
              calib_n: int = 16, test_n: int = 50, seed: int = 1, sqnr_n: int = 4, text_samples: int = 8,
              text_seq_len: int = 256, max_new_tokens: int = 16, options: dict | None = None) -> dict:
    """Quantize ``model`` with every preset x method (MASQuant once per rank), then measure each; the
    result dict ``{"fp": {...}, "rows": [{preset, method, rank, tasks, ppl, sqnr, seconds}]}``."""
    from masq_jax import api
    from masq_jax import methods as registry
    from examples.omni_smollm2.tasks import write_tasks

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calib = write_calib(model, out, "calib", calib_n, 0)
    test_prompts = write_calib(model, out, "test", sqnr_n, seed)
    tasks = write_tasks(out / "tasks", "test", test_n, seed)
    runs = []
    for preset in presets:
        for unit in methods:
            for rank in (ranks if registry.get(unit).compensates else [None]):
                name = f"{preset}-{unit}" + (f"-r{rank:g}" if rank is not None else "")
                t0 = time.time()
                api.quantize(model, str(out / name), method=unit, preset=preset, calib=str(calib),
                             samples=3 * calib_n, eval_samples=0, overwrite=True, progress=False,
                             **({"rank": rank} if rank is not None else {}), **(options or {}))
                runs.append({"preset": preset, "method": unit, "rank": rank, "path": str(out / name),
                             "calibrate_s": round(time.time() - t0, 1)})
                print(f"  calibrated {name} in {runs[-1]['calibrate_s']} s", file=sys.stderr, flush=True)
    res = api.evaluate_tasks([r["path"] for r in runs], str(tasks), reference=model,
                             max_new_tokens=max_new_tokens, batch_size=32)
    names = list(res["results"])  # "fp", then the artefacts by directory name
    fp = {"tasks": res["results"]["fp"]["per_task"]}
    for r, key in zip(runs, names[1:]):
        r["tasks"] = res["results"][key]["per_task"]
        sq = api.evaluate(r["path"], calib=str(test_prompts), samples=3 * sqnr_n)
        r["sqnr"] = {k: sq["sqnr"]["mean"][k] for k in SQNR_COLUMNS}
        pp = api.evaluate(r["path"], calib="text", samples=text_samples, seq_len=text_seq_len)["perplexity"]
        r["ppl"] = pp["quantized"]
        fp["ppl"], fp["ppl_tokens"] = pp["fp"], pp["tokens"]
    table = {"model": model, "calib_per_task": calib_n, "test_per_task": test_n, "test_seed": seed,
             "sqnr_prompts_per_task": sqnr_n, "text_samples": text_samples, "text_seq_len": text_seq_len,
             "fp": fp, "rows": runs, "examples": res["examples"]}
    (out / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "table.md").write_text(format_table(table) + "\n")
    return table


def _cell(tasks: dict, key: str) -> str:
    row = tasks.get(key)
    return "—" if row is None else f"{100 * row['score']:.1f}"


def format_table(t: dict) -> str:
    """A Markdown table: task metrics in %, perplexity, SQNR in dB."""
    head = ["model"] + [c for c, _ in TASK_COLUMNS] + ["text PPL"] + [f"SQNR {m}" for m in SQNR_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fp = t["fp"]
    lines.append("| FP | " + " | ".join(_cell(fp["tasks"], k) for _, k in TASK_COLUMNS)
                 + f" | {fp.get('ppl', float('nan')):.2f} | ∞ | ∞ | ∞ |")
    for r in t["rows"]:
        name = f"{r['preset']} {r['method']}" + (f" r={r['rank']:g}" if r["rank"] is not None else "")
        sq = " | ".join("—" if r["sqnr"][m] is None else f"{r['sqnr'][m]:.2f}" for m in SQNR_COLUMNS)
        lines.append(f"| {name} | " + " | ".join(_cell(r["tasks"], k) for _, k in TASK_COLUMNS)
                     + f" | {r['ppl']:.2f} | {sq} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.omni_smollm2.table", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="checkpoints/omni-smollm2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--presets", default="w4a8")
    ap.add_argument("--methods", default="rtn,smoothquant,mbq,mas,masquant")
    ap.add_argument("--ranks", default="0.05", help="MASQuant rank ratios, comma-separated")
    ap.add_argument("--calib-n", type=int, default=16, help="calibration prompts per media task")
    ap.add_argument("--test-n", type=int, default=50, help="test examples per task")
    ap.add_argument("--seed", type=int, default=1, help="test generator seed")
    ap.add_argument("--sqnr-n", type=int, default=4, help="test prompts per media task for SQNR")
    ap.add_argument("--text-samples", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=None, help="MAS / MASQuant epochs (default: the method's)")
    a = ap.parse_args(argv)
    try:
        t = run_table(a.model, a.out, a.presets.split(","), [m for m in a.methods.split(",") if m],
                      [float(r) for r in a.ranks.split(",")], calib_n=a.calib_n, test_n=a.test_n, seed=a.seed,
                      sqnr_n=a.sqnr_n, text_samples=a.text_samples,
                      options={"epochs": a.epochs} if a.epochs else None)
    except MasqError as e:
        print(f"table: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(format_table(t))
    for ex in t["examples"]:
        print(f"\n{ex['modality']}: {ex['text']!r} -> expected {ex['answer']!r}")
        for n, g in ex["generated"].items():
            print(f"  {n:<22} {g!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
