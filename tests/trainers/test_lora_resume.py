"""A LoRA run resumed from its checkpoint ends with the adapter of the run that never stopped, bit for bit.

Every trainer writes and reads checkpoints through the engine (``Mechanics.save_checkpoint`` /
``restore``), which puts a PEFT policy's adapter back into the adapter (``checkpoint.load_model_weights``)
rather than loading full weights. For each trainer: run A trains 4 steps with a checkpoint at step 2;
run B starts from a fresh model, is given A's ``checkpoint-2`` and resumes to step 4. LoRA dropout is
on, so the RNG state in the checkpoint matters too. The subprocess kill tests in ``test_resume_kill.py``
cover DPO, RLOO and ``rlhfkit ppo`` with LoRA; these cover the rest in-process.
"""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.testing import hidden_rule_preferences, tiny_causal_lm, tiny_reward_model
from tests.trainers.online_helpers import in_target, prompt_rows, small

peft = pytest.importorskip("peft")

STEPS, SAVE = 4, 2
COMMON = dict(max_steps=STEPS, save_steps=SAVE, per_device_train_batch_size=4, learning_rate=5e-2,
              report_to="none", disable_tqdm=True, seed=3)


LORA_FIELDS = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules="c_attn", lora_dropout=0.2)


def lora(task: str | None = "CAUSAL_LM"):
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.2, task_type=task)


def sft(tok, out):
    from rlhfkit import SFTConfig, SFTTrainer

    rows = [{"prompt": f"p{i % 5} x", "completion": " y z" * (1 + i % 2)} for i in range(16)]
    return SFTTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32), args=SFTConfig(output_dir=str(out), **COMMON, **LORA_FIELDS), train_dataset=rows, processing_class=tok)


def reward(tok, out):
    from rlhfkit import RewardConfig, RewardTrainer

    return RewardTrainer(model=tiny_reward_model("gpt2", tok, hidden_size=32),
                         args=RewardConfig(output_dir=str(out), max_length=64, **COMMON, **LORA_FIELDS),
                         train_dataset=hidden_rule_preferences(16, 0), processing_class=tok)


def kto(tok, out):
    from rlhfkit import KTOConfig, KTOTrainer

    return KTOTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32),
                      args=KTOConfig(output_dir=str(out), max_length=64, max_prompt_length=32, **COMMON, **LORA_FIELDS),
                      train_dataset=hidden_rule_preferences(16, 0), processing_class=tok)


def grpo(tok, out):
    from rlhfkit import GRPOConfig, GRPOTrainer

    args = GRPOConfig(**small(out, max_steps=STEPS, save_steps=SAVE, seed=3, report_to="none"))
    return GRPOTrainer(model=tiny_causal_lm("gpt2", tok, hidden_size=32), reward_funcs=in_target, args=args,
                       train_dataset=prompt_rows(), processing_class=tok, peft_config=lora())


class ClassicPPO:
    """``PPOTrainer.train(reward_fn, prompts, ...)`` on a LoRA value-head policy, behind the same two calls."""

    def __init__(self, tok, out):
        from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

        model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_causal_lm("gpt2", tok, hidden_size=32),
                                                                  peft_config=lora())
        config = PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=5e-2, seed=3, ppo_epochs=2)
        self.trainer, self.out = PPOTrainer(config, model, tokenizer=tok), out

    def train(self, resume_from_checkpoint=None):
        prompts = [f"p{i} x y" for i in range(8)]
        return self.trainer.train(in_target_text, prompts, steps=STEPS, save_steps=SAVE, output_dir=str(self.out),
                                  resume_from_checkpoint=resume_from_checkpoint, progress=False,
                                  generation_kwargs={"max_new_tokens": 4})


def in_target_text(prompts, responses):
    return [sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses]


BUILDERS = {"sft": (sft, ""), "reward": (reward, ""), "kto": (kto, ""), "grpo": (grpo, ""), "ppo": (ClassicPPO, "final")}


def _weights(folder) -> dict:
    found = sorted(folder.rglob("*.safetensors"))
    assert found, f"no weights in {folder}"
    return {f"{p.relative_to(folder)}:{k}": v for p in found if "checkpoint-" not in str(p.relative_to(folder))
            for k, v in load_file(p).items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_lora_resume_is_bit_exact(tokenizer, tmp_path, name):
    build, final = BUILDERS[name]
    build(tokenizer, tmp_path / "a").train()
    b = tmp_path / "b"
    b.mkdir()
    shutil.copytree(tmp_path / "a" / f"checkpoint-{SAVE}", b / f"checkpoint-{SAVE}")
    build(tokenizer, b).train(resume_from_checkpoint=str(b / f"checkpoint-{SAVE}"))
    one, two = _weights(tmp_path / "a" / final), _weights(b / final)
    assert any("lora_" in k for k in one), sorted(one)[:5]  # an adapter was saved, not full weights
    assert sorted(one) == sorted(two)
    start = load_file(next((tmp_path / "a" / f"checkpoint-{SAVE}").glob("adapter_model.safetensors")))
    assert any(not torch.equal(start[k.split(":", 1)[1]], v) for k, v in one.items()
               if k.startswith("adapter_model") and k.split(":", 1)[1] in start)  # steps 3-4 moved the adapter
    for key in one:
        assert torch.equal(one[key], two[key]), key
