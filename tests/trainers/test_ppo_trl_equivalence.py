"""On equal-length inputs a step reproduces TRL 0.11.4's losses and stats (to 1e-4).

The reference numbers, tiny model and tokenizer in ``tests/fixtures/trl_0_11_4`` were
written by ``tests/fixtures/make_trl_reference.py`` running TRL 0.11.4 in its own
environment (``benchmarks/setup_trl_env.sh``). Deliberate differences are asserted too.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

FIXTURE = Path(__file__).parent.parent / "fixtures" / "trl_0_11_4"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text())
# Stats our step computes on response tokens only, or that are timings/arrays.
SKIP = ("time/",)
# TRL 0.11.4 gives NaN for these on a batch of one (Bessel correction with n=1); we give finite values.
NAN_FIXED_IN_RLHFKIT = "batch_of_one"


def _float(value) -> float:
    return float(np.asarray(value).reshape(()))  # a (1,)-shaped distribution of a batch of one


def _trainer(config_kwargs):
    tok = AutoTokenizer.from_pretrained(FIXTURE / "model")
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(FIXTURE / "model", summary_dropout_prob=0.0)
    ref = AutoModelForCausalLMWithValueHead.from_pretrained(FIXTURE / "model", summary_dropout_prob=0.0)
    return PPOTrainer(PPOConfig(**config_kwargs), policy, ref, tok)


def test_fixture_value_head_loaded_trl_style():
    policy = AutoModelForCausalLMWithValueHead.from_pretrained(FIXTURE / "model", summary_dropout_prob=0.0)
    stored = load_file(FIXTURE / "model" / "model.safetensors")
    assert torch.equal(policy.v_head.summary.weight, stored["v_head.summary.weight"])


@pytest.mark.parametrize("name", [n for n in REFERENCE["scenarios"] if n != NAN_FIXED_IN_RLHFKIT])
def test_step_matches_trl_0_11_4(name):
    scenario = REFERENCE["scenarios"][name]
    trainer = _trainer(scenario["config_kwargs"])
    queries = [torch.tensor(q) for q in scenario["inputs"]["queries"]]
    responses = [torch.tensor(r) for r in scenario["inputs"]["responses"]]
    for i, expected_step in enumerate(scenario["steps"]):
        scores = [torch.tensor(s) for s in expected_step["scores"]]
        stats = trainer.step(queries, responses, scores)
        mismatched = {}
        for key, expected in expected_step["scalar_stats"].items():
            if key.startswith(SKIP):
                continue
            if key not in stats or not math.isclose(_float(stats[key]), float(expected), rel_tol=1e-4, abs_tol=1e-4):
                mismatched[key] = (stats.get(key, "missing"), expected)
        assert not mismatched, f"{name} step {i}: {mismatched}"
        assert trainer.kl_ctl.value == pytest.approx(expected_step["kl_coef_after"], rel=1e-5)
    if name == "default":
        after = load_file(FIXTURE / "default_after.safetensors")
        ours = trainer.model.state_dict()
        for key, value in after.items():
            torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-5, msg=f"weights differ at {key}")


def test_batch_of_one_finite_where_trl_gives_nan():
    scenario = REFERENCE["scenarios"][NAN_FIXED_IN_RLHFKIT]
    trainer = _trainer(scenario["config_kwargs"])
    step = scenario["steps"][0]
    stats = trainer.step([torch.tensor(q) for q in scenario["inputs"]["queries"]],
                         [torch.tensor(r) for r in scenario["inputs"]["responses"]],
                         [torch.tensor(s) for s in step["scores"]])
    trl_nan = [k for k, v in step["scalar_stats"].items() if v == "nan"]
    assert trl_nan, "the fixture should document TRL's NaNs"
    assert all(math.isfinite(_float(stats[k])) for k in trl_nan)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    # TRL's NaN loss corrupts its weights within the step; compare what it computed before updating
    for key, expected in step["scalar_stats"].items():
        if expected != "nan" and key.startswith(("objective/", "tokens/", "ppo/mean_")):
            assert math.isclose(_float(stats[key]), float(expected), rel_tol=1e-4, abs_tol=1e-4), key
