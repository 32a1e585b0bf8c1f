"""The synthetic one-linear demo: structure and the orderings it exists to show."""

import pytest

from masq_jax.research.one_linear import format_table, run_synthetic_demo


@pytest.mark.slow  # ~15-25 s of compiles on this CPU; the orderings are also unit-tested in smooth/cmc
def test_synthetic_demo_orderings():
    res = run_synthetic_demo(seed=1, steps=40, verbose=False)
    rows = {r["method"]: r for r in res["rows"]}
    assert res["range_ratio"]["vision_over_text_max"] >= 10
    ho = {k: v["heldout"] for k, v in rows.items()}
    assert ho["MAS (one weight per modality)"]["all"] > ho["SmoothQuant"]["all"]
    assert ho["MAS (one weight per modality)"]["text"] > ho["SmoothQuant"]["text"]
    # one stored (text) weight without compensation ruins vision; CMC restores it
    assert ho["MAS, text weight only (rank 0)"]["vision"] < ho["MAS (one weight per modality)"]["vision"] - 5
    best = max((r for k, r in rows.items() if k.startswith("MAS+CMC whitened r=")), key=lambda r: r["rank"])
    assert best["heldout"]["vision"] > ho["MAS (one weight per modality)"]["vision"]
    assert best["calib"]["vision"] >= rows["MAS+CMC plain SVD r=0.25"]["calib"]["vision"] - 1e-3
    # the text path never sees the low-rank branch
    for k, r in rows.items():
        if k.startswith("MAS+CMC"):
            assert abs(r["heldout"]["text"] - ho["MAS, text weight only (rank 0)"]["text"]) < 1e-6
    assert all(set(r["calib"]) == {"text", "vision", "all"} for r in res["rows"])
    assert "SmoothQuant" in format_table(res)
