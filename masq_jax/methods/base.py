"""The Method protocol: what one quantization method does to one decoder layer.

The calibration runner (``masq_jax.calibrate``) calls these hooks and nothing else; it, the artefact
writer and the quantized model never look at a method's name. A method:

* ``init_factors``: smoothing vectors ``{linear: [3, in]}`` (one row per modality; shared-vector
  methods repeat one row) from the layer's full-precision statistics, plus any searched α;
* ``learn`` (when ``trains``): refines them on the block loss, jit-able and vmappable over layers;
* ``compensate`` (when ``compensates``): CMC low-rank factors and what was chosen for them
  (``compensation_report``, ``compensation_warnings`` turn that into report.json entries);
* ``training_linear``: how its linears run while training and propagating (fake quant);
* ``export_linear``: what the artefact stores for one linear (a ``QLinear``, or for
  ``per_modality_weights`` one per modality stacked on a leading axis);
* ``warnings``: what the calibration data lacks for it;
* ``options``: the settings it alone reads (``methods.options.Option``: name, default, help, parser,
  check), inherited by its subclasses; ``QuantSettings`` keeps the chosen method's, read as
  attributes (``st.lr``), and the CLI generates their flags.

Add a method: subclass ``Method`` in a module of this package and list it in ``registry.py``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ClassVar

import jax
import jax.numpy as jnp

from masq_jax.core.qlinear import QLinear, make_qlinear
from masq_jax.core.smoothing import mas_linear
from masq_jax.models import decoder
from masq_jax.methods.options import Option
from masq_jax.modality import NAMES, NON_TEXT, NUM_MODALITIES, TEXT

if TYPE_CHECKING:  # settings imports the method registry, never the other way round
    from masq_jax.settings import QuantSettings

Factors = dict[str, jax.Array]  # {linear: [3, in]} float32
Lora = dict[str, tuple[jax.Array, jax.Array]]  # {linear: (L [3, in, r], R [3, r, out])}

# Reference (docs/method.md §3): init q, o, up; copy q -> k, v and up -> gate; down_proj is never smoothed.
INIT_SOURCE = {"q_proj": "q_proj", "k_proj": "q_proj", "v_proj": "q_proj", "o_proj": "o_proj",
               "gate_proj": "up_proj", "up_proj": "up_proj"}
SMOOTHED = tuple(INIT_SOURCE)
# --tie-smoothing: the linears that read one input share one vector, their init source's (q/k/v, o, gate/up).
TIE_GROUPS = {src: tuple(n for n in SMOOTHED if INIT_SOURCE[n] == src) for src in dict.fromkeys(INIT_SOURCE.values())}


def untie(leaders: Factors) -> Factors:
    """``{q_proj, o_proj, up_proj: [3, in]}`` -> one entry per smoothed linear (each its group's vector)."""
    return {n: leaders[INIT_SOURCE[n]] for n in SMOOTHED}


def ones_factors(cfg) -> Factors:
    """No smoothing: ones ``[3, in]`` for every linear (RTN, and down_proj in every method)."""
    dims = decoder.input_dims(cfg)
    return {n: jnp.ones((NUM_MODALITIES, dims[decoder.INPUT_OF[n]]), jnp.float32) for n in decoder.LINEAR_NAMES}


def fill_absent(s: jax.Array, count: jax.Array) -> jax.Array:
    """A modality without calibration tokens takes text's vector (reported as a warning)."""
    present = (count > 0)[:, None]
    return jnp.where(present, s, s[TEXT][None, :])


def reference_init(cfg, lp, stats, vector) -> Factors:
    """The reference's init: ``vector(stats_of_input, weight) -> [3, in]`` for q, o and up, copied to
    k, v (from q) and gate (from up); down_proj unsmoothed."""
    factors = ones_factors(cfg)
    for name in ("q_proj", "o_proj", "up_proj"):
        factors[name] = vector(stats[decoder.INPUT_OF[name]], lp[name]["w"].astype(jnp.float32))
    for name, src in INIT_SOURCE.items():
        factors[name] = factors[src]
    return factors


def mas_hook(factors: Factors, modality_ids: jax.Array, st: QuantSettings, active=(0, 1, 2)) -> decoder.LinearFn:
    """Fake-quant MAS linears (docs/method.md §4): one smoothed, quantized weight per (present) modality."""

    def linear(name, x, p):
        return mas_linear(x, modality_ids, p["w"], p.get("b"), factors[name], **st.linear_kwargs(),
                          modalities=active, matmul_dtype=st.train_matmul).astype(x.dtype)

    return linear


class Method:
    """One quantization method (see the module docstring). Instances are stateless singletons."""

    name: ClassVar[str]
    summary: ClassVar[str]
    per_modality_vectors: ClassVar[bool] = False  # vectors from each modality's own statistics
    per_modality_weights: ClassVar[bool] = False  # the artefact stores one weight per modality
    compensates: ClassVar[bool] = False  # fits CMC low-rank factors (needs per-modality Gram statistics)
    options: ClassVar[tuple[Option, ...]] = ()  # the options this class declares (subclasses inherit them)

    @classmethod
    def all_options(cls) -> tuple[Option, ...]:
        """Every option this method reads: its own and its base classes' (base classes first)."""
        out: list[Option] = []
        for klass in reversed(cls.__mro__):
            out += [o for o in klass.__dict__.get("options", ()) if o not in out]
        return tuple(out)

    def trains(self, st: QuantSettings) -> bool:
        """Whether ``learn`` runs (and the next layer calibrates on quantized inputs)."""
        return False

    def init_factors(self, cfg, lp: dict, stats: dict, sample: dict, st: QuantSettings,
                     modality_weights: jax.Array) -> tuple[Factors, dict[str, float]]:
        """Smoothing vectors before any learning, and the α searched per linear (if any)."""
        return ones_factors(cfg), {}

    def learn(self, cfg, st: QuantSettings, lp: dict, factors: Factors, h: jax.Array, target: jax.Array,
              batch, modality_weights: jax.Array, key: jax.Array) -> tuple[Factors, jax.Array]:
        """``(learned factors, mean loss per epoch [epochs])`` for one layer (jit-able, vmappable)."""
        raise NotImplementedError(f"{self.name} does not learn its vectors")

    def ranks(self, cfg, st: QuantSettings) -> dict[str, int]:
        """The CMC rank of each linear (0: no low-rank branch)."""
        return {n: 0 for n in decoder.LINEAR_NAMES}

    def gram_statistics(self, st: QuantSettings) -> bool | str:
        """Which Gram statistics the FP pass keeps: none, all tokens (True) or also a validation fold."""
        return self.compensates

    def compensate_layer(self, cfg, lp: dict, factors: Factors, stats: dict,
                         st: QuantSettings) -> tuple[Factors, Lora, dict | None]:
        """``compensate`` at this method's storage ranks (what the runner calls)."""
        return self.compensate(lp, factors, stats, st, self.ranks(cfg, st))

    def compensate(self, lp: dict, factors: Factors, stats: dict, st: QuantSettings,
                   ranks: dict[str, int]) -> tuple[Factors, Lora, dict | None]:
        """The vectors to store (``factors``, or what the compensation deploys instead), the CMC factors
        of one layer at ``ranks`` (the storage rank per linear) and what was chosen for them
        (``(factors, {}, None)`` without CMC)."""
        return factors, {}, None

    def compensation_info_template(self) -> dict | None:
        """Zero arrays shaped like ``compensate``'s info (what a checkpoint restores into)."""
        return None

    def compensation_report(self, info: dict) -> dict:
        """One layer's report.json entry for ``compensate``'s info."""
        return {}

    def compensation_warnings(self, infos: list[dict]) -> list[str]:
        """Run-level warnings from every layer's ``compensate`` info."""
        return []

    def training_linear(self, factors: Factors, modality_ids: jax.Array, st: QuantSettings,
                        active: tuple[int, ...]) -> decoder.LinearFn:
        """The linears that training and quantized propagation run (the MAS model, as the reference)."""
        return mas_hook(factors, modality_ids, st, active)

    def export_linear(self, p: dict, smooth: jax.Array, lora: tuple | None, st: QuantSettings) -> QLinear:
        """The stored linear: ``Q_w(W·diag(s_text))`` with the vectors and low-rank factors (§6)."""
        return _export(self.per_modality_weights, p, smooth, lora, st)

    def warnings(self, cfg, token_counts: dict[str, int], st: QuantSettings) -> list[str]:
        """What the calibration data lacks for this method (one line each)."""
        if not (self.per_modality_vectors or self.compensates):
            return []
        if not cfg.is_multimodal and sum(token_counts[NAMES[m]] for m in NON_TEXT) == 0:
            return []  # a text-only model: nothing to warn about
        out = []
        for m in NON_TEXT:
            name, n = NAMES[m], token_counts[NAMES[m]]
            if n == 0:
                out.append(f"{name}: no calibration tokens; its smoothing vectors fall back to text's and no "
                           "compensation is built")
            elif self.compensates and n < cfg.intermediate_size:
                out.append(f"{name}: {n} calibration tokens for layers up to {cfg.intermediate_size} wide; its "
                           "whitening covariance is rank-deficient (damped), add samples for a better fit")
        return out

    def __repr__(self) -> str:
        return f"<method {self.name}>"


@functools.partial(jax.jit, static_argnames=("per_modality", "st"))
def _export(per_modality: bool, p: dict, s: jax.Array, lora, st: QuantSettings) -> QLinear:
    w = p["w"].astype(jnp.float32)
    kw = st.linear_kwargs()
    bias = p.get("b")
    if per_modality:  # one weight per modality, each smoothed with its own vector
        per_m = [make_qlinear(w, bias, smooth=jnp.broadcast_to(s[m], s.shape), **kw) for m in range(NUM_MODALITIES)]
        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_m)
    l, r = lora if lora is not None else (None, None)
    return make_qlinear(w, bias, smooth=s, lora_l=l, lora_r=r, **kw)

