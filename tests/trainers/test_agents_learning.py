"""Learning test: GRPO with a calculator tool raises the success rate of a tiny model that can barely add.

The model is pre-trained briefly (tests/trainers/agent_helpers.py) on conversations where 30%
of the answers go through the calculator and the rest are given directly: it writes the call
format and copies results, but calls the tool only about a quarter of the time, and its direct
sums are wrong. Success (the final answer is the right sum) on 64 held-out prompts x 4 samples,
measured in two runs: 0.31 -> 0.81 and 0.27 -> 0.82 after 30 GRPO steps, the tool then called in
every episode; about 3 minutes on a busy 2-core CPU, most of it the pre-training.
"""

import pytest
import torch

from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from tests.trainers.agent_helpers import calculator, correct, pretrain, prompts


@pytest.fixture
def one_thread():
    """One intra-op thread: this model is small enough that a second one only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_grpo_learns_to_call_the_calculator(tmp_path, one_thread):
    model, tokenizer = pretrain(tmp_path / "base", steps=300, tool_share=0.3, hidden_size=128)
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), num_generations=8, per_device_train_batch_size=32,
                      max_completion_length=48, max_prompt_length=32, max_tool_calling_iterations=2,
                      learning_rate=1e-3, beta=0.0, max_steps=30, logging_steps=5, num_generations_eval=4,
                      per_device_eval_batch_size=64, report_to="none", disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=correct, args=args, train_dataset=prompts(256, seed=2),
                          eval_dataset=prompts(64, seed=1), processing_class=tokenizer, tools=[calculator])
    base = trainer.evaluate()
    history = trainer.train()
    trained = [row for row in history if "eval/reward" in row][-1]
    calls = [row["train/tools/call_frequency"] for row in history if "train/tools/call_frequency" in row]
    print(f"success {base['eval/reward']:.3f} -> {trained['eval/reward']:.3f}; tool calls per episode "
          f"{calls[0]:.2f} -> {calls[-1]:.2f}")
    assert trained["eval/reward"] > base["eval/reward"] + 0.2, (base, trained)
    assert calls[-1] > calls[0] + 0.3
