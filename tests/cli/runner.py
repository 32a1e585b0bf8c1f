"""Run the ``masq`` CLI in-process as a user would and capture what it printed."""

from masq_jax.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``masq ARGV``."""
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err
