"""masq_jax.quant against a float64 NumPy reference of docs/method.md §1, plus gradients, packing and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.core.np_refs import absmax_mask, assert_quant_close, np_fake_quant, np_step
from masq_jax.core import quant
from masq_jax.errors import QuantConfigError

# Jitted entry points keep the suite fast (eager dispatch compiles every primitive); argument errors
# are raised at trace time all the same. `quant.fake_quant` is used directly where eagerness matters.
_STATIC = ("bits", "symmetric", "group_size", "bound")
fake_quant = jax.jit(quant.fake_quant, static_argnames=_STATIC)
quantize = jax.jit(quant.quantize, static_argnames=_STATIC)
dequantize = jax.jit(quant.dequantize, static_argnames=("dtype",))
pack_int4 = jax.jit(quant.pack_int4, static_argnames=("signed",))
unpack_int4 = jax.jit(quant.unpack_int4, static_argnames=("length", "signed"))
int_values = jax.jit(quant.int_values)

CASES = [
    # bits, symmetric, group_size, bound
    (8, True, None, "qmax"),
    (6, True, None, "qmax"),
    (4, True, None, "qmax"),
    (4, True, None, "qmax+0.5"),
    (8, True, None, "qmax+0.5"),
    (4, False, 32, "qmax"),
    (4, False, None, "qmax"),
    (8, False, None, "qmax"),
    (3, True, 16, "qmax"),
    (2, False, 8, "qmax"),
]


def _data(shape=(24, 64), seed=0, outliers=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if outliers:
        x[:, 3] *= 30.0
        x[..., min(5, shape[-2] - 1), :] += 4.0  # a shifted row: asymmetric ranges
    return x


@pytest.mark.parametrize("bits,symmetric,group_size,bound", CASES)
def test_fake_quant_matches_numpy(bits, symmetric, group_size, bound):
    x = _data()
    got = fake_quant(jnp.asarray(x), bits, symmetric=symmetric, group_size=group_size, bound=bound)
    ref = np_fake_quant(x, bits, symmetric, group_size, bound)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    ignore = absmax_mask(x, group_size) if bound == "qmax+0.5" else None  # absmax/scale = qmax+0.5: a tie
    assert_quant_close(got, ref, np_step(x, bits, symmetric, group_size, bound), ignore=ignore)


def test_symmetric_grid_is_restricted_vs_qwix_bound():
    # spec: 4-bit symmetric uses ±7 with divisor 7; the 'qmax+0.5' bound divides by 7.5.
    x = jnp.asarray([[-1.0, -0.5, 0.0, 0.5, 1.0, 0.25, -0.75, 0.1]])
    qa = quantize(x, 4, bound="qmax")
    q = np.asarray(int_values(qa))
    assert q.min() == -7 and q.max() == 7
    np.testing.assert_allclose(np.asarray(qa.scale).ravel(), [1 / 7], rtol=1e-6)
    qb = quantize(x, 4, bound="qmax+0.5")
    np.testing.assert_allclose(np.asarray(qb.scale).ravel(), [1 / 7.5], rtol=1e-6)
    # a different quantizer: 0.5 -> 3.5 -> 4 (half to even) steps of 1/7.5, vs 0.5 -> 3.5 -> 4 steps of 1/7
    a = np.asarray(fake_quant(x, 4, bound="qmax"))
    b = np.asarray(fake_quant(x, 4, bound="qmax+0.5"))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(b[0, 3], 4 / 7.5, rtol=1e-6)


def test_group_size_is_contiguous():
    x = _data((4, 64))
    x[:, 16:32] *= 100.0  # one loud group must not change the other groups' scales
    got = np.asarray(fake_quant(jnp.asarray(x), 4, symmetric=True, group_size=16))
    for g in range(4):
        sl = slice(16 * g, 16 * (g + 1))
        ref = np_fake_quant(x[:, sl], 4, True, None)
        assert_quant_close(got[:, sl], ref, np_step(x[:, sl], 4, True, None))


def test_identity_at_16_bits():
    x = jnp.asarray(_data())
    assert quant.fake_quant(x, 16) is x
    xb = x.astype(jnp.bfloat16)
    assert quant.fake_quant(xb, 16, symmetric=False).dtype == jnp.bfloat16


@pytest.mark.parametrize("bits,symmetric,group_size,bound", CASES)
def test_dequantize_quantize_equals_fake_quant_bitwise(bits, symmetric, group_size, bound):
    x = jnp.asarray(_data(seed=1))
    qa = quantize(x, bits, symmetric=symmetric, group_size=group_size, bound=bound)
    fq = fake_quant(x, bits, symmetric=symmetric, group_size=group_size, bound=bound)
    np.testing.assert_array_equal(np.asarray(dequantize(qa)), np.asarray(fq))
    # the same under jit
    dq = jax.jit(lambda a: dequantize(quantize(a, bits, symmetric=symmetric, group_size=group_size, bound=bound)))
    np.testing.assert_array_equal(np.asarray(dq(x)), np.asarray(fq))


def test_int4_storage_and_pack_roundtrip():
    x = jnp.asarray(_data((6, 33), outliers=False))  # odd length: padded nibble
    qa = quantize(x, 4)
    assert qa.packed and qa.qvalue.dtype == jnp.int8 and qa.qvalue.shape == (6, 17)
    qa_u = quantize(x, 4, symmetric=False)
    assert qa_u.qvalue.dtype == jnp.uint8 and qa_u.qvalue.shape == (6, 17)
    rng = np.random.default_rng(0)
    for signed, lo, hi in ((True, -8, 8), (False, 0, 16)):
        q = rng.integers(lo, hi, size=(5, 7, 10)).astype(np.int8)
        packed = pack_int4(jnp.asarray(q), signed=signed)
        assert packed.shape == (5, 7, 5)
        np.testing.assert_array_equal(np.asarray(unpack_int4(packed, 10, signed)), q)
        # element 2j in the low nibble, 2j+1 in the high nibble
        b = np.asarray(packed).astype(np.uint8)
        np.testing.assert_array_equal(b & 0xF, (q[..., 0::2].astype(np.int16) & 0xF))
        np.testing.assert_array_equal(b >> 4, (q[..., 1::2].astype(np.int16) & 0xF))
    q_odd = rng.integers(-8, 8, size=(3, 9)).astype(np.int8)
    np.testing.assert_array_equal(np.asarray(unpack_int4(pack_int4(jnp.asarray(q_odd), True), 9, True)), q_odd)


def test_int8_storage_dtypes():
    x = jnp.asarray(_data())
    assert quantize(x, 8).qvalue.dtype == jnp.int8
    assert quantize(x, 8, symmetric=False).qvalue.dtype == jnp.uint8
    assert quantize(x, 6).qvalue.shape == x.shape


def _np_grad_symmetric(x, cot, bits, bound="qmax"):
    """d/dx sum(cot * fq(x)) with STE rounding and the scale differentiated through absmax (1 row)."""
    qmax = 2 ** (bits - 1) - 1
    div = qmax if bound == "qmax" else qmax + 0.5
    qmin = -qmax if bound == "qmax" else -qmax - 1
    a = np.abs(x).max()
    s = a / div
    r = np.round(x / s)
    inside = (r >= qmin) & (r <= qmax)
    q = np.clip(r, qmin, qmax)
    # out = q(x, s) * s with dq/dx = inside/s, dq/ds = -inside*x/s^2
    d_direct = cot * inside
    d_s = np.sum(cot * (q - inside * x / s))
    g = d_direct.copy()
    j = np.argmax(np.abs(x))
    g[j] += d_s * np.sign(x[j]) / div
    return g


def _np_grad_asymmetric(x, cot, bits):
    """Same for the asymmetric quantizer with the zero point held constant (no gradient)."""
    levels = 2**bits - 1
    mx, mn = x.max(), x.min()
    s = (mx - mn) / levels
    zp = np.round(-mn / s)
    r = np.round(x / s) + zp
    inside = (r >= 0) & (r <= levels)
    q = np.clip(r, 0, levels)
    d_direct = cot * inside
    d_s = np.sum(cot * ((q - zp) - inside * x / s))
    g = d_direct.copy()
    g[np.argmax(x)] += d_s / levels
    g[np.argmin(x)] -= d_s / levels
    return g


@pytest.mark.parametrize("bits,bound", [(4, "qmax"), (8, "qmax"), (4, "qmax+0.5")])
def test_gradient_flows_through_dynamic_scale(bits, bound):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(40)
    cot = rng.standard_normal(40)
    g = jax.grad(lambda a: jnp.sum(jnp.asarray(cot, jnp.float32) * fake_quant(a, bits, bound=bound)))(
        jnp.asarray(x, jnp.float32)
    )
    ref = _np_grad_symmetric(x, cot, bits, bound)
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-4, atol=1e-4)
    # the absmax element receives the scale's gradient: it differs from the plain STE value
    j = np.argmax(np.abs(x))
    assert abs(float(g[j]) - cot[j]) > 1e-3
    # and d/d(scale) of the output is non-zero: rescaling x by c must not be gradient-free
    gs = jax.grad(lambda c: jnp.sum(jnp.asarray(cot, jnp.float32) * fake_quant(c * jnp.asarray(x, jnp.float32), bits)))(1.0)
    assert abs(float(gs)) > 1e-3


def test_asymmetric_zero_point_has_no_gradient():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(50) + 2.0  # all positive-ish: zero point far from 0, clipping occurs
    x[0] = -0.3
    cot = rng.standard_normal(50)
    g = jax.grad(lambda a: jnp.sum(jnp.asarray(cot, jnp.float32) * fake_quant(a, 4, symmetric=False)))(
        jnp.asarray(x, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(g), _np_grad_asymmetric(x, cot, 4), rtol=1e-4, atol=1e-4)


def test_straight_through_rounding_inside_range():
    # away from the scale-carrying element, d fq / dx is exactly 1 (STE) for unclipped values
    x = jnp.asarray([0.13, -0.41, 0.77, 1.0, -0.05])
    jac = jax.jacfwd(lambda a: fake_quant(a, 4))(x)
    np.testing.assert_allclose(np.diag(np.asarray(jac))[[0, 1, 2, 4]], 1.0, rtol=1e-6)


def test_bf16_input():
    x32 = _data(seed=5)
    xb = jnp.asarray(x32, jnp.bfloat16)
    for sym in (True, False):
        fq = fake_quant(xb, 4, symmetric=sym)
        assert fq.dtype == jnp.bfloat16
        ref = np_fake_quant(np.asarray(xb, np.float64), 4, sym)
        step = np_step(np.asarray(xb, np.float64), 4, sym)
        err = np.abs(np.asarray(fq, np.float64) - ref)
        assert np.all(err <= step * 1.05 + 1e-2 * np.abs(ref))  # bf16 scale: at most a step apart
    qa = quantize(xb, 4)
    np.testing.assert_array_equal(
        np.asarray(dequantize(qa, jnp.bfloat16), np.float32), np.asarray(fake_quant(xb, 4), np.float32)
    )
    assert jax.grad(lambda a: jnp.sum(fake_quant(a, 8).astype(jnp.float32)))(xb).dtype == jnp.bfloat16


def test_leading_axes_and_vmap_match_loop():
    x = jnp.asarray(_data((3, 8, 32), seed=6))
    f = jax.jit(jax.vmap(lambda a: fake_quant(a, 4, group_size=8)))
    looped = jnp.stack([fake_quant(x[i], 4, group_size=8) for i in range(3)])
    np.testing.assert_array_equal(np.asarray(f(x)), np.asarray(looped))
    np.testing.assert_array_equal(np.asarray(fake_quant(x, 4, group_size=8)), np.asarray(looped))
    qv = jax.jit(jax.vmap(lambda a: dequantize(quantize(a, 4))))(x)
    np.testing.assert_array_equal(np.asarray(qv), np.asarray(fake_quant(x, 4)))


def test_jit_does_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(a):
        return quant.fake_quant(a, 4, symmetric=False, group_size=16)

    x = jnp.asarray(_data())
    f(x)
    f(x + 1.0)


@pytest.mark.parametrize("bits", [1, 0, 17, 32, -4, 4.0, True, "4"])
def test_bad_bits(bits):
    with pytest.raises(QuantConfigError, match=r"bits"):
        fake_quant(jnp.ones((2, 4)), bits)
    with pytest.raises(QuantConfigError, match=r"bits"):
        quantize(jnp.ones((2, 4)), bits)


def test_bad_group_and_bound():
    x = jnp.ones((2, 12))
    with pytest.raises(QuantConfigError, match=r"group_size=5 does not divide"):
        fake_quant(x, 4, group_size=5)
    with pytest.raises(QuantConfigError, match=r"group_size"):
        quantize(x, 4, group_size=0)
    with pytest.raises(QuantConfigError, match=r"bound"):
        fake_quant(x, 4, bound="qmax+1")
    with pytest.raises(QuantConfigError, match=r"at most 8 bits"):
        quantize(x, 12)
    assert issubclass(QuantConfigError, ValueError)


def test_quant_spec_is_the_quantizer_as_a_value():
    from masq_jax.core.quant import QuantSpec
    from masq_jax.settings import QuantSettings

    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32)), jnp.float32)
    spec = QuantSpec(4, symmetric=False, group_size=8)
    np.testing.assert_array_equal(np.asarray(spec.fake_quant(x)),
                                  np.asarray(quant.fake_quant(x, 4, symmetric=False, group_size=8)))
    np.testing.assert_array_equal(np.asarray(quant.dequantize(spec.quantize(x))), np.asarray(spec.fake_quant(x)))
    assert not QuantSpec(16).quantizes and QuantSpec(8).quantizes
    st = QuantSettings(method="rtn", wbits=4, abits=6, group_size=16, w_symmetric=False)
    assert st.weights == QuantSpec(4, False, 16) and st.activations == QuantSpec(6, True, None)
    assert st.linear_kwargs() == {"wbits": 4, "w_symmetric": False, "group_size": 16, "bound": "qmax", "abits": 6}
