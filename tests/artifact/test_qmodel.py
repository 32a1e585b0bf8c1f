"""The artefact as a model: ``masq_jax.load`` tells it from a checkpoint, it takes the FP model's
arguments, and its integer path equals the fake-quant twin of what each method stores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import masq_jax
from masq_jax.artifact import QuantizedModel, quantized_hook, read_artifact
from masq_jax.calib.synthetic import SyntheticSpec, synthetic_calibset
from masq_jax.calibrate.batch import prepare
from masq_jax.calibrate.runner import run_quantize
from masq_jax.core.qlinear import qlinear_reference
from masq_jax.families.toy import make_config, random_params
from masq_jax.methods import registry
from masq_jax.models import LINEAR_NAMES, Model, ModelLoadError, load_pretrained
from masq_jax.settings import QuantSettings

pytestmark = pytest.mark.filterwarnings("ignore")
CFG = make_config("tiny")
PARAMS = random_params(CFG, seed=1)
METHODS = ("rtn", "smoothquant", "mas", "masquant")


def calib(samples, seed):
    return synthetic_calibset(SyntheticSpec(hidden_size=CFG.hidden_size, samples=samples, text_len=8, image_h=4,
                                            image_w=4, audio_len=8, vary=False, seed=seed))


def settings(method):
    return QuantSettings(method=method, wbits=4, abits=8, epochs=1, samples=4, rank=8, rank_floor=0)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artefacts")
    for m in METHODS:
        run_quantize((CFG, PARAMS), calib(4, 0), str(root / m), settings(m), progress=False)
    return root


def test_load_tells_artefacts_from_checkpoints(artefacts):
    q = masq_jax.load(artefacts / "masquant")
    assert isinstance(q, QuantizedModel) and isinstance(q, Model)
    with pytest.raises(ModelLoadError, match="masq_jax.load"):
        load_pretrained(artefacts / "masquant")  # the FP loader knows nothing of the quantizer
    fp = masq_jax.load("toy:tiny")
    assert type(fp) is Model


def test_fp_and_quantized_models_share_one_call_signature(artefacts):
    ids = jnp.arange(10)[None] % CFG.vocab_size
    mids = jnp.array([[0, 0, 1, 1, 1, 2, 2, 0, 0, 0]])
    for model in (Model(CFG, PARAMS), masq_jax.load(artefacts / "masquant")):
        text = model(input_ids=ids)  # every token takes the text path
        mixed = model(input_ids=ids, position_ids=None, attention_mask=jnp.ones((1, 10), bool), modality_ids=mids)
        assert text.shape == mixed.shape == (1, 10, CFG.vocab_size)
        assert bool(jnp.isfinite(mixed).all())
        if isinstance(model, QuantizedModel):
            assert not np.allclose(text, mixed)  # routing changes vision/audio tokens
        else:
            np.testing.assert_array_equal(np.asarray(text), np.asarray(mixed))  # FP ignores the routing
    with pytest.raises(masq_jax.MasqError, match="modality_ids must be"):
        Model(CFG, PARAMS)(input_ids=ids, modality_ids=mids[:, :5])


def test_load_honours_dtype(artefacts):
    q16 = masq_jax.load(artefacts / "mas", dtype=jnp.bfloat16)
    assert q16.params["embed"].dtype == jnp.bfloat16
    assert q16.params["layers"]["q_proj"].weight.scale.dtype == jnp.float32  # integer weights keep theirs
    assert masq_jax.load(artefacts / "mas").params["embed"].dtype == jnp.float32
    logits = q16(input_ids=jnp.arange(6)[None])
    assert bool(jnp.isfinite(logits).all())


@pytest.mark.parametrize("method", METHODS)
def test_integer_artefact_equals_fake_quant_twin(artefacts, method):
    """Fake quant and real quant agree: each stored linear evaluated in float fake-quant
    (``qlinear_reference``) equals the artefact's integer ``kernels.qmatmul`` path, layer by layer;
    where the method trains and propagates through its stored model (not CMC), so do its training
    linears."""
    qmodel = read_artifact(artefacts / method)
    st = settings(method)
    m = registry.get(method)
    prep = prepare(CFG, PARAMS, calib(3, 9))
    batch = prep.batch
    for i in range(CFG.num_layers):
        lp = jax.tree_util.tree_map(lambda a: a[i], PARAMS["layers"])
        lq = jax.tree_util.tree_map(lambda a: a[i], qmodel.params["layers"])
        real = batch.layer(CFG, lq, prep.h0, linear=quantized_hook(batch.modality_ids, qmodel.per_modality, "xla"))

        def twin(name, x, p):
            ql = lq[name]
            if not qmodel.per_modality:
                return qlinear_reference(x, batch.modality_ids, ql)
            ys = [qlinear_reference(x, jnp.zeros_like(batch.modality_ids), jax.tree_util.tree_map(lambda a: a[k], ql))
                  for k in range(3)]
            return jnp.select([(batch.modality_ids == k)[..., None] for k in range(3)], ys)

        sims = [batch.layer(CFG, lq, prep.h0, linear=twin)]
        if not m.compensates:
            factors = {n: (lq[n].smooth[:, 0] if qmodel.per_modality else lq[n].smooth) for n in LINEAR_NAMES}
            sims.append(batch.layer(CFG, lp, prep.h0, linear=m.training_linear(factors, batch.modality_ids, st,
                                                                                 batch.active)))
        for sim in sims:
            scale = float(jnp.abs(sim).max())
            np.testing.assert_allclose(np.asarray(real), np.asarray(sim), atol=2e-4 * scale)
