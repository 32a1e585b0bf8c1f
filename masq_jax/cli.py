"""``masq``: the command line. Bad input prints one line (``masq: error: ...``) and exits 2; usage
errors too (one line and a pointer to ``--help``); warnings meant for the user print as one
``masq: warning: ...`` line each; ``masq`` alone prints the help and exits 0.

Only ``MasqError`` (the root of every user-fixable error) is turned into that line: anything else is
a bug and keeps its traceback. Every default comes from ``masq_jax.settings``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from masq_jax.errors import MasqError, MasqWarning, OutputDirError, SettingsError
from masq_jax.methods import registry
from masq_jax.methods.registry import names as method_names
from masq_jax.modality import NAMES
from masq_jax.calib.text import DEFAULT_TEXT_SEQ_LEN
from masq_jax.settings import (DEFAULT_CALIB, DEFAULT_EVAL_SAMPLES, DEFAULT_EVAL_SEED, DEFAULT_PRESET, PRESETS,
                               PROPAGATIONS, TRAIN_MATMULS, default)

COLUMNS = ("all",) + NAMES


def _methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in method_names()]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{','.join(bad) or text!r}: methods are {', '.join(method_names())}")
    return names


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` with every default shown: ``(default: X)`` appended unless the help text states it
    already (options whose default is decided later, e.g. by the preset, say so in words)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.required:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (``masq: error: ... (see 'masq quantize --help')``), exit status 2,
    instead of argparse's usage block; every default shown in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"masq: error: {message} (see '{self.prog} --help')\n")


def model_help(default: str) -> str:
    """What ``--model`` takes, from the registered model families."""
    from masq_jax.families.qwen25 import NAMES as QWEN
    from masq_jax.families.toy import CONFIGS, PREFIX

    return (f"smollm2 (the embedded SmolLM2-135M-Instruct GGUF), {', '.join(QWEN)} (Qwen2.5-Coder-0.5B GGUF), "
            f"{PREFIX}{{{','.join(CONFIGS)}}} (random weights, no tokenizer), an HF model directory, a .gguf file, "
            f"an omni-SmolLM2 or tiny omni checkpoint directory{', a masq-jax artefact' if 'artefact' in default else ''}"
            f" (default: {default})")


def families_epilog() -> str:
    from masq_jax.families.registry import FAMILIES

    return "model families (--model):\n" + "\n".join(f"  {f.summary}" for f in FAMILIES)


def _add_quantize(sub) -> None:
    q = sub.add_parser("quantize", help="calibrate and write a quantized artefact", epilog=families_epilog(),
                       description="Calibrate a model with a post-training quantization method and write the "
                                   "quantized artefact to --out (with report.json: SQNR per layer and modality, "
                                   "perplexity, warnings).")
    data = q.add_argument_group("model and data")
    data.add_argument("--model", default=None, help=model_help("smollm2"))
    data.add_argument("--calib", default=DEFAULT_CALIB,
                      help="calibration source: text, text:PATH[,PATH], synthetic[:key=value,...], a .jsonl "
                           "manifest or a .npz CalibSet")
    data.add_argument("--samples", type=int, default=None, help=f"calibration samples (default: {default('samples')})")
    data.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES,
                      help="more samples drawn from --calib and held out for the report's SQNR and perplexity")
    data.add_argument("--seq-len", type=int, default=None,
                      help="tokens per sample: the window of a text source, a cut of any other (default: "
                           f"{DEFAULT_TEXT_SEQ_LEN}-token windows for text, whole samples otherwise)")
    data.add_argument("--seed", type=int, default=None, help=f"data and training seed (default: {default('seed')})")
    m = q.add_argument_group("method")
    m.add_argument("--method", type=_methods, default=[default("method")],
                   help=f"one of {', '.join(method_names())}, or a comma list to compare several side by side "
                        f"(default: {default('method')})")
    m.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"bit widths and weight grouping (default: {DEFAULT_PRESET})")
    m.add_argument("--wbits", type=int, default=None, help="weight bits, overriding the preset's (default: the "
                                                           "preset's; w4a8: 4)")
    m.add_argument("--abits", type=int, default=None, help="activation bits, overriding the preset's (default: the "
                                                           "preset's; w4a8: 8)")
    m.add_argument("--group-size", type=int, default=None,
                   help="weight group size, 0 = per output channel (default: the preset's: 128 for w4a16, per "
                        "channel otherwise)")
    m.add_argument("--loss-weights", default=None,
                   help="MAS loss weights per modality, or 'mbq' (gradient-derived) "
                        "(default: text=1,vision=0.5,audio=1)")
    m.add_argument("--epochs", type=int, default=None, help=f"training epochs (default: {default('epochs')})")
    m.add_argument("--propagation", choices=PROPAGATIONS, default=None,
                   help=f"what each layer trains on: the quantized layers' output (sequential) or the FP one "
                        f"(default: {default('propagation')})")
    m.add_argument("--train-matmul", choices=TRAIN_MATMULS, default=None,
                   help="MAS training products: bfloat16 tensor cores at float32-level accuracy, or float32 "
                        "(default: auto: bfloat16 on GPU/TPU, float32 on CPU)")
    m.add_argument("--tie-smoothing", action="store_true", default=None,
                   help="one smoothing vector per input group and modality (q/k/v share one, gate/up one), so "
                        "the quantized model runs one QKV GEMM and one gate|up GEMM (default: off)")
    for owner, (options, users) in registry.options_by_owner().items():  # each method's own options
        title = "compensation" if registry.get(owner).compensates else "training"
        group = q.add_argument_group(f"{title} ({owner} options)", f"read by --method {', '.join(users)}")
        for option in options:
            option.add_to(group)
    scale = q.add_argument_group("scale-out")
    scale.add_argument("--mesh", default=None,
                       help="data=D,model=M: calibrate on a device mesh, samples along data, the linears along "
                            "model (default: one device)")
    scale.add_argument("--stream", action="store_true",
                       help="read each decoder layer from the checkpoint when needed (host memory: a few layers; "
                            "default: off)")
    scale.add_argument("--offload-activations", choices=("host", "disk"), default=None,
                       help="keep calibration activations in host memory or temporary files (default: on the "
                            "devices)")
    out = q.add_argument_group("output")
    out.add_argument("--out", required=True, help="output directory, written as OUT.partial and renamed when "
                                                  "complete (required)")
    out.add_argument("--store-dtype", choices=("bf16", "bfloat16", "float32"), default=None,
                     help="dtype of the artefact's unquantized tensors: embeddings, head, norms, biases (default: bf16)")
    out.add_argument("--resume", action="store_true", help="continue the interrupted run in OUT.partial")
    out.add_argument("--overwrite", action="store_true",
                     help="replace an existing OUT directory or start OUT.partial again")
    out.add_argument("--quiet", action="store_true",
                     help="no progress bars and no Python warnings; masq's own warnings still print")


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="SQNR per layer × modality and perplexity of an artefact against FP, or "
                                    "task accuracy by generation (--tasks)")
    e.add_argument("--model", required=True, action="append",
                   help="a masq-jax artefact directory (repeat it with --tasks to compare several; required)")
    e.add_argument("--reference", default=None,
                   help="the full-precision model (default: the artefact's source)")
    e.add_argument("--calib", default=None,
                   help="evaluation data source (as for quantize; default: the artefact's held-out split)")
    e.add_argument("--samples", type=int, default=DEFAULT_EVAL_SAMPLES, help="evaluation samples")
    e.add_argument("--seq-len", type=int, default=None, help="tokens per sample (default: as for quantize)")
    e.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED,
                   help="data seed, other than calibration's so the samples are fresh")
    e.add_argument("--json", default=None, help="write the results as JSON to this path (default: none)")
    e.add_argument("--plot", default=None, help="write SQNR plots (PNG) into this directory (default: none)")
    e.add_argument("--tasks", default=None,
                   help="a tasks .jsonl ({task, text, images, audios, answer, metric}): score generated answers "
                        "(default: none, SQNR and perplexity)")
    e.add_argument("--with-calibration", action="store_true",
                   help="also the SQNR on the artefact's own calibration samples, beside the held-out split "
                        "(a fit that does not generalise shows as a gap)")
    e.add_argument("--max-new-tokens", type=int, default=32, help="with --tasks: the longest answer generated")
    e.add_argument("--batch-size", type=int, default=16, help="with --tasks: prompts generated together")
    e.add_argument("--quiet", action="store_true", help="no Python warnings; masq's own warnings still print")


def _add_generate(sub) -> None:
    g = sub.add_parser("generate", help="answer a prompt (with images / audio / video) and stream the text",
                       epilog=families_epilog())
    g.add_argument("--model", default=None, help=model_help("smollm2") + "; or a masq-jax artefact")
    g.add_argument("--prompt", required=True, help="the prompt (required)")
    g.add_argument("--image", action="append", default=[], help="an image file (repeatable; default: none)")
    g.add_argument("--audio", action="append", default=[], help="an audio file (repeatable; default: none)")
    g.add_argument("--video", action="append", default=[], help="a folder of video frames (repeatable; default: none)")
    g.add_argument("--max-new-tokens", type=int, default=128, help="the longest answer, in tokens")
    g.add_argument("--temperature", type=float, default=0.0, help="sampling temperature, 0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--mesh", default=None,
                   help="data=D,model=M: the weights split along model, as calibration does (default: one device)")
    g.add_argument("--quiet", action="store_true", help="no Python warnings; masq's own warnings still print")


def version() -> str:
    """The installed masq-jax version (the source tree's when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("masq-jax")
    except metadata.PackageNotFoundError:
        import masq_jax

        return masq_jax.__version__


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="masq", description="MASQuant post-training quantization in JAX. Start with "
                                        "'masq quantize --model toy:tiny --calib synthetic --out runs/toy' "
                                        "or 'masq quantize --help'.")
    p.add_argument("--version", action="version", version=f"masq {version()}")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND", parser_class=Parser)
    _add_quantize(sub)
    _add_eval(sub)
    _add_generate(sub)
    from masq_jax.serving import cli as export_cli

    export_cli.add_parser(sub)
    d = sub.add_parser("demo", help="the core method on one synthetic two-modality linear (seconds)")
    d.add_argument("--synthetic", action="store_true", help="(the only demo this command runs)")
    d.add_argument("--seed", type=int, default=0, help="data seed")
    return p


def _fmt(v, width=8, digits=2):
    return f"{'—':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def print_summary(name: str, rep: dict, out: str) -> None:
    st = rep["settings"]
    print(f"\n{name}: W{st['wbits']}A{st['abits']} → {out}")
    m = rep["sqnr"]["mean"]
    print("  mean SQNR (dB, " + rep.get("evaluated_on", "") + "): "
          + "  ".join(f"{k} {_fmt(m[k], 0)}" for k in COLUMNS))
    if rep.get("perplexity"):
        pp = rep["perplexity"]
        print(f"  perplexity: FP {pp['fp']:.3f}  quantized {pp['quantized']:.3f}  ({pp['tokens']} tokens)")
    if rep.get("artifact_bytes"):
        from masq_jax.artifact.info import describe_bytes

        print("  artefact " + describe_bytes(rep["artifact_bytes"]))
    print(f"  time {rep['stages']['total_seconds']:.1f} s; warnings: {len(rep['warnings'])}")


def print_table(results: dict[str, dict]) -> None:
    """Side-by-side table of methods: mean SQNR per modality and perplexity."""
    first = next(iter(results.values()))
    st = first["settings"]
    print(f"\nW{st['wbits']}A{st['abits']}, mean decoder-layer SQNR in dB on {first.get('evaluated_on')} samples")
    w = max(12, 1 + max(map(len, results)))
    head = f"{'method':<{w}}" + "".join(f"{k:>9}" for k in COLUMNS) + f"{'PPL':>10}{'time s':>9}"
    print(head)
    print("-" * len(head))
    pp = first.get("perplexity")
    if pp:
        print(f"{'fp':<{w}}" + "".join(f"{'∞':>9}" for _ in COLUMNS) + f"{pp['fp']:>10.3f}{'':>9}")
    for name, rep in results.items():
        m = rep["sqnr"]["mean"]
        ppl = rep.get("perplexity")
        print(f"{name:<{w}}" + "".join(_fmt(m[k], 9) for k in COLUMNS)
              + (f"{ppl['quantized']:>10.3f}" if ppl else f"{'—':>10}") + f"{rep['stages']['total_seconds']:>9.1f}")


def cmd_quantize(a) -> int:
    from masq_jax.api import quantize_many

    opts = dict(wbits=a.wbits, abits=a.abits, group_size=a.group_size,
                loss_weights=a.loss_weights, epochs=a.epochs, seed=a.seed, propagation=a.propagation,
                train_matmul=a.train_matmul, tie_smoothing=a.tie_smoothing, store_dtype=a.store_dtype,
                **{name: getattr(a, name) for name in registry.all_options()})  # every method's options
    results = {}

    def done(preset, name, out, rep):
        results[name] = rep
        print_summary(name, rep, out)

    # every method's output and settings are checked before the first one runs; the model loads once
    quantize_many(a.model, a.out, methods=a.method, presets=[a.preset], calib=a.calib, samples=a.samples,
                  eval_samples=a.eval_samples, seq_len=a.seq_len, resume=a.resume, overwrite=a.overwrite,
                  progress=not a.quiet, mesh=a.mesh, stream=a.stream, offload_activations=a.offload_activations,
                  on_report=done, **opts)
    if len(results) > 1:
        print_table(results)
    return 0


def _write_json(path: str | None, res: dict) -> None:
    from masq_jax.calibrate.rundir import write_json_atomic

    if path:
        try:
            write_json_atomic(Path(path), res)
        except OSError as e:
            raise OutputDirError(f"--json {path}: cannot write ({e.strerror or e})") from None


def print_tasks(res: dict) -> None:
    """Side-by-side task scores of every model, per task and per modality, and one example each.
    Accuracies (exact, contains) in %, higher is better; error rates (wer, cer) in %, lower is better."""
    names = list(res["results"])
    groups = res["results"][names[0]]
    w = max(16, 2 + max(len(k) for g in groups.values() for k in g))
    print(f"task accuracy by generation on {res['tasks']} ({res['n']} prompts; reference {res['reference']})")
    for group, rows in groups.items():
        print(f"{group.replace('_', ' '):<{w}}{'metric':>9}" + "".join(f"{n:>14}" for n in names))
        for key, row in rows.items():
            print(f"{key:<{w}}{row['metric']:>9}"
                  + "".join(f"{100 * res['results'][n][group][key]['score']:>13.1f}%" for n in names))
    for ex in res["examples"]:
        media = f" [{', '.join(ex['media'])}]" if ex["media"] else ""
        print(f"\n{ex['modality']}: {ex['text']!r}{media} -> expected {ex['answer']!r}")
        for n in names:
            print(f"  {n:<14} {ex['generated'][n]!r}")


def cmd_eval(a) -> int:
    from masq_jax.api import evaluate, evaluate_tasks

    if a.tasks:
        check_max_new_tokens(a.max_new_tokens, a.model[0])
        res = evaluate_tasks(a.model, a.tasks, reference=a.reference, max_new_tokens=a.max_new_tokens,
                             batch_size=a.batch_size)
        _write_json(a.json, res)
        print_tasks(res)
        return 0
    if len(a.model) > 1:
        raise SettingsError("several --model values need --tasks; SQNR is measured for one artefact at a time")
    a.model = a.model[0]
    res = evaluate(a.model, reference=a.reference, calib=a.calib, samples=a.samples, seq_len=a.seq_len,
                   seed=a.seed, plot_dir=a.plot, with_calibration=a.with_calibration)
    _write_json(a.json, res)
    print(f"SQNR (dB) of {a.model} against {res['reference']} on {res['data']}")
    print(f"{'layer':>5}" + "".join(f"{k:>9}" for k in COLUMNS))
    for i, row in enumerate(res["sqnr"]["per_layer"]):
        print(f"{i:>5}" + "".join(_fmt(row[k], 9) for k in COLUMNS))
    print(f"{'mean':>5}" + "".join(_fmt(res["sqnr"]["mean"][k], 9) for k in COLUMNS))
    if "calibration_sqnr" in res:
        cal = res["calibration_sqnr"]["mean"]
        print(f"{'calib':>5}" + "".join(_fmt(cal[k], 9) for k in COLUMNS) + "   (mean on the calibration samples)")
        print(f"{'gap':>5}" + "".join(_fmt(None if cal[k] is None or res['sqnr']['mean'][k] is None
                                           else cal[k] - res["sqnr"]["mean"][k], 9) for k in COLUMNS)
              + "   (calibration − held-out: what the fit does not carry to new data)")
    if res.get("perplexity"):
        pp = res["perplexity"]
        print(f"perplexity: FP {pp['fp']:.3f}  quantized {pp['quantized']:.3f}  ({pp['tokens']} tokens)")
    for path in res.get("plots", []):
        print(f"plot: {path}")
    return 0


def check_max_new_tokens(n: int, model: str | None) -> None:
    """``--max-new-tokens`` at least 1 and within the model's positions (from its headers: no weights)."""
    from masq_jax.loading import model_config

    if n < 1:
        raise SettingsError(f"--max-new-tokens must be at least 1, got {n}")
    cfg = model_config(model)
    limit = None if cfg is None else cfg.max_position_embeddings
    if limit is not None and n >= limit:
        raise SettingsError(f"--max-new-tokens {n} exceeds the model's {limit} positions (with the prompt); "
                            f"ask for fewer than {limit} tokens")


def cmd_generate(a) -> int:
    from masq_jax.api import generate_text

    check_max_new_tokens(a.max_new_tokens, a.model)

    generate_text(a.model, a.prompt, images=a.image, audios=a.audio, videos=a.video, max_new_tokens=a.max_new_tokens,
                  temperature=a.temperature, top_p=a.top_p, seed=a.seed, mesh=a.mesh,
                  stream=lambda piece: print(piece, end="", flush=True))
    print()
    return 0


def cmd_demo(a) -> int:
    from masq_jax.research.one_linear import run_synthetic_demo

    run_synthetic_demo(a.seed, verbose=True)
    return 0


def cmd_export(a) -> int:
    from masq_jax.serving.cli import run

    return run(a)


COMMANDS = {"quantize": cmd_quantize, "eval": cmd_eval, "generate": cmd_generate, "demo": cmd_demo,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    """``masq``: with no arguments, the help (exit status 0); else the command's exit status (2: bad input)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        return 0
    a = parser.parse_args(argv)
    with warnings.catch_warnings():  # restored on return: main(argv) called from Python leaves no trace
        warnings.showwarning = show_warning
        if getattr(a, "quiet", False):
            warnings.simplefilter("ignore")
        warnings.filterwarnings("default", category=MasqWarning)
        return _run(a)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning in one line, never with its source line: ``masq: warning: ...`` for the ones meant for
    the user (``MasqWarning``), ``Category: ...`` for any other (silenced by ``--quiet``)."""
    text = str(message).strip()
    text = text.splitlines()[0] if text else category.__name__
    head = "masq: warning" if issubclass(category, MasqWarning) else category.__name__
    print(f"{head}: {text}", file=sys.stderr if file is None else file, flush=True)


def _run(a) -> int:
    try:
        return COMMANDS[a.command](a)
    except KeyboardInterrupt:
        from masq_jax.calibrate.preflight import partial_of

        if a.command == "quantize" and any(partial_of(Path(a.out) / m if len(a.method) > 1 else a.out).exists()
                                           for m in a.method):
            print("masq: interrupted; rerun the same command with --resume to continue", file=sys.stderr)
        else:
            print("masq: interrupted", file=sys.stderr)
        return 130
    except MasqError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"masq: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
