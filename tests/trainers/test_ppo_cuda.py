"""PPOTrainer on CUDA, fp32 and bf16: every tensor on the GPU, CPU-equal in fp32. Skipped without CUDA.

``benchmarks/gpu_check.sh`` runs this file (and the benchmark's CUDA timings) on a GPU machine.
"""

import math

import pytest
import torch
from transformers import AutoTokenizer

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(path, **cfg):
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    ref = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    cfg = dict(dict(batch_size=4, mini_batch_size=2, learning_rate=1e-3, seed=0), **cfg)
    return PPOTrainer(PPOConfig(**cfg), model, ref, tok), tok


def _rollouts(device):
    g = torch.Generator().manual_seed(0)
    queries = [torch.randint(10, 200, (n,), generator=g).to(device) for n in (3, 5, 4, 6)]
    responses = [torch.randint(10, 200, (n,), generator=g).to(device) for n in (4, 2, 5, 3)]
    return queries, responses, [torch.tensor(float(i) - 1.5) for i in range(4)]


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_generate_and_step_run_on_the_gpu(tiny_dirs, precision):
    trainer, tok = _trainer(tiny_dirs["gpt2"], mixed_precision=precision)
    assert trainer.current_device.type == "cuda"
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    assert all(p.device.type == "cuda" for p in trainer.ref_model.parameters())
    queries = [torch.tensor([5, 6, 7]), torch.tensor([8, 9])]  # CPU queries are moved by generate
    responses = trainer.generate(queries, return_prompt=False, max_new_tokens=6, min_new_tokens=6, do_sample=True,
                                 top_k=0, top_p=1.0, pad_token_id=tok.pad_token_id)
    assert all(r.device.type == "cuda" and len(r) == 6 for r in responses)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    stats = trainer.step(*_rollouts("cuda"))
    assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.model.v_head.summary.weight.dtype == torch.float32  # master weights stay float32


def test_fp32_step_on_gpu_matches_cpu(tiny_dirs):
    stats = {}
    for device in ("cpu", "cuda"):
        trainer, _ = _trainer(tiny_dirs["gpt2"], accelerator_kwargs={"cpu": device == "cpu"})
        assert trainer.current_device.type == device
        stats[device] = trainer.step(*_rollouts(device))
    for key in ("ppo/loss/policy", "ppo/loss/value", "objective/kl", "ppo/policy/approxkl"):
        assert math.isclose(stats["cpu"][key], stats["cuda"][key], rel_tol=1e-3, abs_tol=1e-5), key
