"""CTC pre-training of omni-SmolLM2's towers: labels and best-path decoding by hand, the loss falls,
and the frozen-tower optimiser of the LLM stage moves only the projectors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from masq_jax.families.omni_smollm2 import model as M
from examples.omni_smollm2 import pretrain as PT
from examples.omni_smollm2 import train as T


def test_greedy_ctc_decoding_merges_repeats_and_drops_blanks():
    onehot = lambda ids: np.eye(11)[ids]  # noqa: E731
    assert PT.greedy_decode(onehot([[0, 4, 4, 0, 4, 2, 2, 0]]), "asr") == ["331"]
    assert PT.greedy_decode(onehot([[0, 0, 0]]), "asr") == [""]


def test_pool_labels_spell_the_examples():
    x, y, yp = PT.pool("ocr", "calib", 3, 0)
    from examples.omni_smollm2 import data

    items = data.examples("ocr", "calib", 3, 0)
    assert x.shape == (3, M.N_VISION, M.PATCH * M.PATCH)
    for it, row, pad in zip(items, y, yp):
        assert "".join(PT.VOCAB["ocr"][t - 1] for t, p in zip(row, pad) if p == 0) == it.label


@pytest.mark.slow  # a training run: -m slow (keeps the default suite inside CI's budget)
def test_ctc_steps_lower_the_loss():
    enc = M.init_encoders(jax.random.PRNGKey(0), 576)
    heads = enc.pop("heads")
    ctc = {t: {"w": 0.02 * jax.random.normal(jax.random.PRNGKey(i), (128, 1 + len(v))), "b": jnp.zeros(1 + len(v))}
           for i, (t, v) in enumerate(PT.VOCAB.items())}
    batches = {t: tuple(jnp.asarray(a) for a in PT.pool(t, "train", 4, 0)) for t in PT.VOCAB}
    params, opt = {"enc": enc, "ctc": ctc}, optax.adam(3e-3)
    state = opt.init(params)
    grad = jax.jit(jax.value_and_grad(lambda p: PT.loss_fn({**p, "n_heads": heads}, batches)))
    losses = []
    for _ in range(5):
        loss, g = grad(params)
        upd, state = opt.update(g, state, params)
        params = optax.apply_updates(params, upd)
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_frozen_towers_move_only_the_projectors():
    enc = M.init_encoders(jax.random.PRNGKey(0), 576)
    enc.pop("heads")
    opt = T.optimizer(100, 1e-2, freeze_towers=True)
    state = opt.init(enc)
    grads = jax.tree.map(jnp.ones_like, enc)
    for _ in range(3):
        upd, state = opt.update(grads, state, enc)
        new = optax.apply_updates(enc, upd)
    for tower in ("vision", "audio"):
        for key, sub in new[tower].items():
            moved = any(not np.array_equal(np.asarray(a), np.asarray(b))
                        for a, b in zip(jax.tree.leaves(sub), jax.tree.leaves(enc[tower][key])))
            assert moved == (key in T.PROJECTOR), (tower, key)
