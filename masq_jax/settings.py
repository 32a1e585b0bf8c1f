"""Quantization settings: the one place for option values and their defaults.

``QuantSettings`` is everything that decides a calibration's result (hashed into the run
fingerprint, stored in the artefact); its ``weights`` and ``activations`` are ``QuantSpec``s (one
quantizer each: bits, symmetry, group size, bound; ``masq_jax.core.quant``). The CLI, ``masq_jax.quantize`` and the notebooks read every
default from here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from masq_jax.core.quant import SPEC_BOUND, QuantSpec, validate_bits
from masq_jax.errors import QuantConfigError, SettingsError
from masq_jax.methods import registry
from masq_jax.modality import NAMES

PROPAGATIONS = ("sequential", "independent")
TRAIN_MATMULS = ("auto", "float32", "bfloat16")  # auto: bfloat16 on GPU/TPU, float32 on CPU
BOUNDS = ("qmax", "qmax+0.5")
# The dtype of an artefact's unquantized tensors (embeddings, head, norms, biases); "bf16" is read as bfloat16.
STORE_DTYPES = ("bfloat16", "float32")
STORE_DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "f32": "float32"}

# docs/method.md §1 table: (wbits, abits, group_size, weight symmetric)
PRESETS: dict[str, tuple[int, int, int | None, bool]] = {
    "w4a16": (4, 16, 128, False),
    "w8a8": (8, 8, None, True),
    "w4a8": (4, 8, None, True),
    "w4a6": (4, 6, None, True),
}

# Run options that are not part of the result (defaults of the CLI and of masq_jax.quantize).
DEFAULT_PRESET = "w4a8"
DEFAULT_CALIB = "text"
DEFAULT_EVAL_SAMPLES = 8
DEFAULT_EVAL_SEED = 1234  # masq eval draws fresh samples with a seed other than calibration's

# The published scripts' loss weights (docs/method.md §4), by modality name.
DEFAULT_LOSS_WEIGHTS = {"text": 1.0, "vision": 0.5, "audio": 1.0}


@dataclasses.dataclass(frozen=True, init=False)
class QuantSettings:
    """Everything that decides a calibration's result (hashed into the run fingerprint): what every
    method shares, plus the chosen method's own options (``options``, declared by the method:
    ``Method.options``; read as attributes, e.g. ``st.rank`` for ``masquant``).

    ``QuantSettings(method="masquant", rank=8)``: any method's option is accepted as a keyword and
    validated by its declaration (so one set of flags can drive several methods); only the chosen
    method's are kept.
    """

    method: str = "masquant"
    wbits: int = 4
    abits: int = 8
    group_size: int | None = None
    w_symmetric: bool = True
    loss_weights: tuple[float, float, float] | str = tuple(DEFAULT_LOSS_WEIGHTS.values())  # or "mbq"
    epochs: int = 2
    samples: int = 128
    seed: int = 0
    alpha: float = 0.5
    propagation: str = "sequential"
    train_matmul: str = "auto"  # MAS products: float32 HIGHEST or bf16 tensor cores (core.matmul)
    bound: str = SPEC_BOUND  # the symmetric quantization bound: "qmax" (the reference) or "qmax+0.5"
    tie_smoothing: bool = False  # one vector per input group and modality (q/k/v, gate/up): merged GEMMs
    store_dtype: str = "bfloat16"  # the artefact's unquantized tensors (integer weights and scales keep theirs)
    options: tuple[tuple[str, Any], ...] = ()  # the chosen method's options, (name, value) in declaration order

    def __init__(self, *, options: Any = (), **values: Any):
        shared = {f.name: f for f in dataclasses.fields(self) if f.name != "options"}
        for name, field in shared.items():  # the class attributes above are the defaults
            object.__setattr__(self, name, values.pop(name) if name in values else field.default)
        object.__setattr__(self, "options", registry.resolve_options(self.method, {**dict(options), **values}))
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        """The chosen method's options read as attributes (``st.rank``)."""
        if name != "options":
            for key, value in self.options:
                if key == name:
                    return value
        raise AttributeError(f"{type(self).__name__} of method {self.method!r} has no setting {name!r}")

    def __post_init__(self) -> None:
        try:
            validate_bits(self.wbits, "wbits")
            validate_bits(self.abits, "abits")
        except QuantConfigError as e:
            raise SettingsError(str(e)) from None
        if self.wbits > 8:
            raise SettingsError(f"--wbits {self.wbits}: stored weights take 2..8 bits")
        if self.group_size is not None and self.group_size <= 0:
            raise SettingsError(f"--group-size must be a positive integer, got {self.group_size}")
        if self.epochs < 0 or self.samples <= 0:
            raise SettingsError("--epochs must be >= 0 and --samples > 0")
        _choice("--propagation", self.propagation, PROPAGATIONS)
        _choice("--train-matmul", self.train_matmul, TRAIN_MATMULS)
        _choice("--bound", self.bound, BOUNDS)
        object.__setattr__(self, "store_dtype", STORE_DTYPE_ALIASES.get(self.store_dtype, self.store_dtype))
        _choice("--store-dtype", self.store_dtype, STORE_DTYPES)
        if not isinstance(self.tie_smoothing, bool):
            raise SettingsError(f"tie_smoothing must be True or False, got {self.tie_smoothing!r}")
        if self.train_matmul == "auto":  # recorded resolved, so the artefact says what ran
            object.__setattr__(self, "train_matmul", default_train_matmul())
        if isinstance(self.loss_weights, str):
            if self.loss_weights != "mbq":
                raise SettingsError("--loss-weights takes 'text=1,vision=0.5,audio=1' or 'mbq'")
        elif len(self.loss_weights) != 3 or any(not (w >= 0) for w in self.loss_weights):
            raise SettingsError("--loss-weights needs three non-negative weights (text, vision, audio)")

    @property
    def weights(self) -> QuantSpec:
        """The weight quantizer."""
        return QuantSpec(self.wbits, self.w_symmetric, self.group_size, self.bound)

    @property
    def activations(self) -> QuantSpec:
        """The activation quantizer: symmetric, dynamic per token."""
        return QuantSpec(self.abits, True, None, self.bound)

    def weight_kwargs(self) -> dict[str, Any]:
        """The weight quantizer as the core functions' keywords (wbits, w_symmetric, group_size, bound)."""
        w = self.weights
        return {"wbits": w.bits, "w_symmetric": w.symmetric, "group_size": w.group_size, "bound": w.bound}

    def linear_kwargs(self) -> dict[str, Any]:
        """``weight_kwargs`` plus ``abits``: what ``mas_linear`` and ``make_qlinear`` take."""
        return {**self.weight_kwargs(), "abits": self.activations.bits}

    def to_json(self) -> dict[str, Any]:
        """The settings as recorded (report.json, the artefact, the run fingerprint): the shared fields and,
        flat beside them, every registered method option: the chosen method's values, the other
        options' defaults (the record keeps one layout whatever the method)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        record = {**shared, **registry.option_defaults(), **dict(self.options)}
        return json.loads(json.dumps(record))


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


def default(field: str) -> Any:
    """The default of a shared ``QuantSettings`` field (for the CLI's help and the Python signatures)."""
    return QuantSettings.__dataclass_fields__[field].default


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
                f"--loss-weights entry {part!r}: expected name=value with name in {', '.join(NAMES)}"
            )
        try:
            weights[key] = float(value)
        except ValueError:
            raise SettingsError(f"--loss-weights {key}={value!r} is not a number") from None
    return tuple(weights[n] for n in NAMES)


def make_settings(*, preset_name: str | None = None, wbits: int | None = None, abits: int | None = None,
                  group_size: int | None = None, w_symmetric: bool | None = None,
                  loss_weights: str | tuple | None = None, **fields: Any) -> QuantSettings:
    """QuantSettings from CLI-style options: a preset first (default ``DEFAULT_PRESET``), explicit bits
    override it; ``None`` means "the default". ``group_size=0`` means per output channel."""
    base = preset(preset_name or DEFAULT_PRESET)
    for key, value in (("wbits", wbits), ("abits", abits), ("w_symmetric", w_symmetric)):
        if value is not None:
            base[key] = value
    if group_size is not None:
        base["group_size"] = group_size or None
    if isinstance(loss_weights, str):
        base["loss_weights"] = parse_loss_weights(loss_weights)
    elif loss_weights is not None:
        base["loss_weights"] = tuple(loss_weights)
    base.update({k: v for k, v in fields.items() if v is not None})
    return QuantSettings(**base)
