"""``masq export``: the subcommand's arguments and what it prints (``masq_jax.cli`` registers it)."""

from __future__ import annotations

from masq_jax.serving.checkpoint import FORMATS


def add_parser(sub) -> None:
    """Add ``export`` to the ``masq`` subcommands."""
    e = sub.add_parser("export", help="write an artefact as a compressed-tensors checkpoint (vLLM, tpu-inference)")
    e.add_argument("--model", required=True, help="a masq-jax artefact directory (made by masq quantize)")
    e.add_argument("--format", choices=FORMATS, default=FORMATS[0])
    e.add_argument("--out", required=True, help="the checkpoint directory to create (must not exist)")
    e.add_argument("--text-only", action="store_true",
                   help="MAS / MASQuant artefacts: export the text path (text vectors, no low-rank branch); the "
                        "vision/audio cost is measured on the run's held-out data and printed")


def _db(v) -> str:
    return "-" if v is None else f"{v:.2f} dB"


def run(a) -> int:
    """Export, then print what went out (and, for ``--text-only``, what it costs)."""
    from masq_jax.serving.checkpoint import export

    res = export(a.model, a.out, format=a.format, text_only=a.text_only)
    files = res["copied_files"]
    tok = f"copied from the source: {', '.join(files)}" if files else "no tokenizer files in the source"
    print(f"wrote {res['out']}: {res['format']} {res['compression']} ({res['scheme']}), {res['tensors']} tensors, "
          f"{tok}")
    if res["routed"]:
        c = res["cost"]
        print(f"text path only: dropped {' and '.join(res['routed'])}")
        print(f"cost on {c['data']} (mean decoder-layer SQNR, artefact -> exported text path):")
        for m in ("text", "vision", "audio"):
            print(f"  {m:<6} {_db(c['artefact'][m]):>10} -> {_db(c['text_only'][m])}")
    return 0
