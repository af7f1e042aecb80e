"""`rlhfkit ppo`'s held-out evaluation is the online trainers' `evaluate_policy`, under its own names."""

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit.models import AutoModelForCausalLMWithValueHead
from rlhfkit.pipeline.ppo_run import PPORunConfig, _evaluator
from rlhfkit.rollout.rewards import load_reward_funcs
from rlhfkit.testing import save_tiny, tiny_tokenizer
from rlhfkit.trainers import PPOTrainer
from rlhfkit.trainers.grpo import GRPOConfig, GRPOTrainer
from rlhfkit.trainers.ppo_train import _encoder

PROMPTS = ["the band", "all night", "a robot", "my friend", "under the moon", "they"]
CHAR_COUNT = "tests.pipeline.test_ppo_run_eval:char_count"


def char_count(prompts, completions, **_):
    """A rule reward that differs between responses: their length in characters."""
    return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo-eval")
    return {"root": root, "policy": save_tiny(root / "policy", hidden_size=32, seed=1),
            "rm": save_tiny(root / "rm", kind="reward", hidden_size=32, seed=2)}


def ppo_evaluation(policy_folder, tokenizer, out, prompts, chat=False, **fields):
    """One evaluation of the untrained policy as `rlhfkit ppo` runs it, and the trainer it ran on."""
    config = PPORunConfig(model_name_or_path=str(policy_folder), dataset_name="unused.jsonl", output_dir=str(out),
                          per_device_train_batch_size=4, mini_batch_size=2, num_ppo_epochs=1, max_new_tokens=4,
                          report_to="none", seed=0, **fields)
    reward_funcs = load_reward_funcs(config.reward_sources(), tokenizer=tokenizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No dataset is provided")
        trainer = PPOTrainer(config.ppo_config(), AutoModelForCausalLMWithValueHead.from_pretrained(policy_folder),
                             None, tokenizer)
    return _evaluator(trainer, config, (prompts, {}), reward_funcs, chat)(trainer)


def test_ppo_and_grpo_report_the_same_numbers_for_one_policy_and_prompts(folders, tmp_path):
    """Same policy, prompts, seed and sampling settings: `rlhfkit ppo` and `rlhfkit grpo` evaluate alike
    (reward-model scores with EOS, rule rewards, lengths), each under its own metric names."""
    tok = tiny_tokenizer()
    ppo = ppo_evaluation(folders["policy"], tok, tmp_path / "ppo", PROMPTS, reward_model_path=str(folders["rm"]),
                         reward_funcs=CHAR_COUNT)
    grpo = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(folders["policy"]),
                       reward_funcs=[str(folders["rm"]), CHAR_COUNT],
                       args=GRPOConfig(output_dir=str(tmp_path / "grpo"), num_generations=2,
                                       per_device_train_batch_size=2, num_generations_eval=1,
                                       per_device_eval_batch_size=2, max_completion_length=4, max_prompt_length=256,
                                       report_to="none", seed=0),
                       train_dataset=[{"prompt": p} for p in PROMPTS], eval_dataset=[{"prompt": p} for p in PROMPTS],
                       processing_class=tok)
    torch.manual_seed(0)  # rlhfkit ppo seeds its evaluation with the run's seed; GRPO's follows the global RNG
    online = grpo.evaluate()
    assert ppo["eval/prompts"] == len(PROMPTS)
    assert ppo["eval/reward_mean"] == online["eval/reward"]
    assert ppo["eval/length_mean"] == online["eval/completions/mean_length"]
    assert ppo["eval/rewards/rm"] == online["eval/rewards/rm/mean"]
    assert ppo[f"eval/rewards/{CHAR_COUNT}"] == online["eval/rewards/char_count/mean"]
    assert ppo[f"eval/rewards/{CHAR_COUNT}"] > 0  # the rule saw texts, not an empty sample
    n = len(PROMPTS)  # rlhfkit ppo reports the population std, GRPO the unbiased one
    assert ppo["eval/reward_std"] ** 2 * n / (n - 1) == pytest.approx(online["eval/reward_std"] ** 2, rel=1e-5)
    assert ppo["eval/kl"] == 0.0  # the untrained policy is its reference: k3 of equal log-probs is 0


@pytest.mark.parametrize("chat", [False, True])
def test_evaluation_samples_from_prompts_tokenised_as_training_tokenises_them(folders, tmp_path, monkeypatch, chat):
    """Text prompts get the tokenizer's special tokens (a BOS here) at evaluation as in train_ppo; chat
    prompts, whose template writes them, get none."""
    from tokenizers.processors import TemplateProcessing

    from rlhfkit.rollout.prompts import render_prompts
    from rlhfkit.rollout.sampling import Completions

    tok = tiny_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(single="<|bos|> $A", special_tokens=[("<|bos|>",
                                                                                            tok.bos_token_id)])
    policy = save_tiny(tmp_path / "policy", hidden_size=32, seed=1)
    tok.save_pretrained(policy)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS[:3]] if chat else PROMPTS[:3]
    sampled = []
    real = Completions.sample
    monkeypatch.setattr(Completions, "sample", lambda self, model, queries: sampled.extend(queries) or
                        real(self, model, queries))
    ppo_evaluation(policy, tok, tmp_path / "out", prompts, chat=chat, reward_funcs=CHAR_COUNT, max_prompt_length=4)
    encode = _encoder(tok, 4, not chat)  # what train_ppo samples from (run_ppo: add_special_tokens=not chat)
    expected = [encode(t).tolist() for t in render_prompts(tok, prompts)]
    assert [q.tolist() for q in sampled] == expected
    if not chat:
        assert expected[0][0] == tok.bos_token_id  # 'the band' is short: its BOS is kept
