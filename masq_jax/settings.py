"""Quantization settings: presets, method names, loss weights, and their validation."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from masq_jax.errors import SettingsError
from masq_jax.quant import IDENTITY_BITS, QuantConfigError, validate_bits

METHODS = ("rtn", "smoothquant", "awq", "mbq", "mas", "masquant")
PROPAGATIONS = ("sequential", "independent")
TRAIN_MATMULS = ("auto", "float32", "bfloat16")  # auto: bfloat16 on GPU/TPU, float32 on CPU
CMC_SOLVERS = ("gram", "svd")  # gram: eigh of min(in, out)-sized Gram matrices; svd: dense SVDs

# spec §1 table: (wbits, abits, group_size, weight symmetric)
PRESETS: dict[str, tuple[int, int, int | None, bool]] = {
    "w4a16": (4, 16, 128, False),
    "w8a8": (8, 8, None, True),
    "w4a8": (4, 8, None, True),
    "w4a6": (4, 6, None, True),
}

# The published scripts' loss weights (spec §4).
DEFAULT_LOSS_WEIGHTS = {"text": 1.0, "vision": 0.5, "audio": 1.0}


@dataclasses.dataclass(frozen=True)
class QuantSettings:
    """Everything that decides a calibration's result (hashed into the run fingerprint)."""

    method: str = "masquant"
    wbits: int = 4
    abits: int = 8
    group_size: int | None = None
    w_symmetric: bool = True
    rank: float = 0.02  # <= 1: ratio of min(in, out); > 1: absolute rank (spec §5)
    rank_floor: int = 32
    loss_weights: tuple[float, float, float] | str = (1.0, 0.5, 1.0)  # text, vision, audio | "mbq"
    epochs: int = 2
    lr: float = 5e-2
    samples: int = 128
    seed: int = 0
    alpha: float = 0.5
    propagation: str = "sequential"
    cov_damping: float = 1e-2  # relative damping of the whitening covariance (ours, spec §5 robustness)
    train_matmul: str = "auto"  # MAS products: float32 HIGHEST or bf16 tensor cores (masq_jax.matmul)
    cmc_solver: str = "gram"  # CMC decompositions (masq_jax.cmc.low_rank_compensation's ``svd``)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SettingsError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        try:
            validate_bits(self.wbits, "wbits")
            validate_bits(self.abits, "abits")
        except QuantConfigError as e:
            raise SettingsError(str(e)) from None
        if self.wbits > 8:
            raise SettingsError(f"--wbits {self.wbits}: stored weights take 2..8 bits")
        if self.group_size is not None and self.group_size <= 0:
            raise SettingsError(f"--group-size must be a positive integer, got {self.group_size}")
        if not (self.rank >= 0):
            raise SettingsError(f"--rank must be >= 0 (a ratio <= 1 or an absolute rank), got {self.rank}")
        if self.rank > 1 and float(self.rank) != int(self.rank):
            raise SettingsError(f"--rank {self.rank}: above 1 it is an absolute rank and must be an integer")
        if self.epochs < 0 or self.samples <= 0:
            raise SettingsError("--epochs must be >= 0 and --samples > 0")
        if not (self.lr > 0):
            raise SettingsError(f"--lr must be > 0, got {self.lr}")
        if self.propagation not in PROPAGATIONS:
            raise SettingsError(f"--propagation must be one of {', '.join(PROPAGATIONS)}")
        if self.train_matmul not in TRAIN_MATMULS:
            raise SettingsError(f"--train-matmul must be one of {', '.join(TRAIN_MATMULS)}, got {self.train_matmul!r}")
        if self.train_matmul == "auto":  # recorded resolved, so the artefact says what ran
            object.__setattr__(self, "train_matmul", default_train_matmul())
        if self.cmc_solver not in CMC_SOLVERS:
            raise SettingsError(f"--cmc-solver must be one of {', '.join(CMC_SOLVERS)}, got {self.cmc_solver!r}")
        if isinstance(self.loss_weights, str):
            if self.loss_weights != "mbq":
                raise SettingsError("--loss-weights takes 'text=1,vision=0.5,audio=1' or 'mbq'")
        elif len(self.loss_weights) != 3 or any(not (w >= 0) for w in self.loss_weights):
            raise SettingsError("--loss-weights needs three non-negative weights (text, vision, audio)")

    @property
    def quantizes_activations(self) -> bool:
        return self.abits < IDENTITY_BITS

    @property
    def learns(self) -> bool:
        return self.method in ("mas", "masquant")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def default_train_matmul() -> str:
    """bf16 tensor-core products on GPU/TPU (float32-level accuracy, several times faster); float32
    on CPU, where bf16 dots are slower than float32 ones."""
    import jax

    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def preset(name: str) -> dict[str, Any]:
    """wbits/abits/group_size/w_symmetric of a named preset."""
    key = name.lower()
    if key not in PRESETS:
        raise SettingsError(f"--preset {name!r} is not one of {', '.join(PRESETS)}")
    wbits, abits, group, sym = PRESETS[key]
    return {"wbits": wbits, "abits": abits, "group_size": group, "w_symmetric": sym}


def parse_loss_weights(text: str) -> tuple[float, float, float] | str:
    """Parse 'text=1,vision=0.5,audio=1' (missing entries take the defaults) or 'mbq'."""
    if text.strip().lower() == "mbq":
        return "mbq"
    weights = dict(DEFAULT_LOSS_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in weights:
            raise SettingsError(
                f"--loss-weights entry {part!r}: expected name=value with name in text, vision, audio"
            )
        try:
            weights[key] = float(value)
        except ValueError:
            raise SettingsError(f"--loss-weights {key}={value!r} is not a number") from None
    return (weights["text"], weights["vision"], weights["audio"])
