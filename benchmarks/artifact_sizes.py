"""Artefact size against the source model, per preset and method (issue 32), with peak host memory.

    python benchmarks/artifact_sizes.py                                   # SmolLM2: 3 presets x 4 methods
    flock /tmp/masq-heavy.lock nice -n 10 python benchmarks/artifact_sizes.py --model qwen2.5-0.5b \\
        --presets w8a8 --methods rtn                                     # one process per run: its own peak

Each run quantizes with few calibration samples and no training epochs (sizes depend on the model,
preset and method only; the figures say nothing about quality) and reads ``report.json``'s
``artifact_bytes`` (``masq_jax.artifact.info``). "before" is the layout main wrote before issue 32
(every unquantized tensor in float32, a separate ``lm_head`` only where the checkpoint has one, no
tokenizer files), computed from the artefact's own safetensors header: each tensor stored in bf16
counted at 4 bytes an element (``--check-before`` also writes one float32-stored artefact and
compares). Rows are appended to ``--results`` as they are measured; artefacts are deleted unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
import warnings
from pathlib import Path

PRESETS = ("w8a8", "w4a8", "w4a16")
METHODS = ("rtn", "smoothquant", "mas", "masquant")


def before_bytes(path: Path) -> int:
    """The artefact's size in main's layout (float32 unquantized tensors, no tokenizer files)."""
    from masq_jax.artifact.info import safetensors_header

    model = path / "model.safetensors"
    with open(model, "rb") as f:
        header_len = 8 + int.from_bytes(f.read(8), "little")
    body = 0
    for entry in safetensors_header(model).values():
        size = entry["data_offsets"][1] - entry["data_offsets"][0]
        body += 2 * size if entry["dtype"] == "BF16" else size
    return header_len + body + (path / "config.json").stat().st_size


def one(model_path: str, cfg, params, train, preset: str, method: str, out: Path, samples: int,
        store_dtype: str = "bfloat16") -> dict:
    from masq_jax.calibrate.runner import run_quantize
    from masq_jax.settings import make_settings

    from masq_jax.models import decoder
    from masq_jax.settings import preset as preset_fields

    group = preset_fields(preset)["group_size"]
    dims = set(decoder.input_dims(cfg).values())
    if group and any(d % group for d in dims):  # W4A16's 128 does not divide SmolLM2's 576: the largest that does
        group = next(g for g in (64, 32, 16) if all(d % g == 0 for d in dims))
    st = make_settings(method=method, preset_name=preset, samples=samples, epochs=0, store_dtype=store_dtype,
                       group_size=group or 0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = run_quantize((cfg, params), train, str(out), st, source_name=model_path, progress=False, overwrite=True)
    b = rep["artifact_bytes"]
    return {"preset": preset + (f"/g{group}" if group else ""), "method": method, "store_dtype": store_dtype, "total": b["total"],
            "model_file": b["model_file"], "support_files": b["support_files"], "before": before_bytes(out),
            "breakdown": b, "peak_host_bytes": max(s.get("peak_host_bytes", 0) for s in rep["stages"].values()
                                                   if isinstance(s, dict)),
            "seconds": round(time.perf_counter() - t0, 1)}


def fmt_mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def table(rows: list[dict]) -> str:
    from masq_jax.artifact.info import describe_bytes

    head = (f"{'model':<14}{'preset':<12}{'method':<12}{'source MB':>10}{'before MB':>11}{'after MB':>10}"
            f"{'after/src':>10}{'peak host GiB':>14}  breakdown (after)")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<14}{r['preset']:<12}{r['method']:<12}{fmt_mb(r['source_bytes']):>10}"
                     f"{fmt_mb(r['before']):>11}{fmt_mb(r['total']):>10}{r['total'] / r['source_bytes']:>10.2f}"
                     f"{r['process_peak_host_bytes'] / 2**30:>14.2f}  {describe_bytes(r['breakdown'])}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--out-dir", default="runs/artifact_sizes")
    p.add_argument("--results", default="runs/artifact_sizes/results.jsonl")
    p.add_argument("--check-before", action="store_true",
                   help="also write the first run with float32 storage and compare it with the computed 'before'")
    p.add_argument("--keep", action="store_true", help="keep the artefacts")
    p.add_argument("--show", action="store_true", help="print the table of --results and exit")
    a = p.parse_args()
    results = Path(a.results)
    if a.show:
        print(table([json.loads(x) for x in results.read_text().splitlines() if x.strip()]))
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from masq_jax.loading import load_calibration, load_checkpoint, source_of

    model_path = source_of(a.model)
    source_bytes = os.path.getsize(model_path) if os.path.isfile(model_path) else None
    cfg, params = load_checkpoint(model_path)
    train, _ = load_calibration("text", model_path, cfg, a.samples, 0, 0, a.seq_len)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in a.presets.split(","):
        for method in a.methods.split(","):
            out = Path(a.out_dir) / f"{a.model}-{preset}-{method}"
            row = {"model": a.model, "source_bytes": source_bytes,
                   **one(model_path, cfg, params, train, preset, method, out, a.samples)}
            row["process_peak_host_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if a.check_before and not rows:
                f32 = one(model_path, cfg, params, train, preset, method, Path(str(out) + "-f32"), a.samples,
                          "float32")
                row["check_before"] = {"computed": row["before"], "float32_model_and_config":
                                       f32["model_file"] + (Path(str(out) + "-f32") / "config.json").stat().st_size}
                print(f"check: computed 'before' {row['before']:,} B; float32-stored artefact (model + config) "
                      f"{row['check_before']['float32_model_and_config']:,} B")
                shutil.rmtree(Path(str(out) + "-f32"), ignore_errors=True)
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(table([row]).splitlines()[-1], flush=True)
            if not a.keep:
                shutil.rmtree(out, ignore_errors=True)
    print(table(rows))


if __name__ == "__main__":
    main()
