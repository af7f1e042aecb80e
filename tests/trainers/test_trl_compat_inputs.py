"""PPOTrainer's argument checks (TRL 0.11.4's errors and warnings, and rlhfkit's own bad-input checks),
and encoder-decoder PPO end to end on a tiny random T5."""

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhfkit import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer
from rlhfkit.testing import tiny_t5

pytestmark = pytest.mark.filterwarnings("ignore:No dataset is provided")


@pytest.fixture
def trainer(tiny_dirs, tokenizer):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    return PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, None, tokenizer)


def _rollout():
    return [torch.tensor([5, 6, 7]), torch.tensor([8, 9])], [torch.tensor([10, 11]), torch.tensor([12, 13, 14])]


def _no_model_work(trainer, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the model ran before the inputs were checked")
    monkeypatch.setattr(trainer, "_rollout_forward", boom)


@pytest.mark.parametrize("where", ["queries", "responses"])
def test_token_id_outside_the_vocabulary_names_the_row(trainer, monkeypatch, where):
    _no_model_work(trainer, monkeypatch)
    queries, responses = _rollout()
    (queries if where == "queries" else responses)[1] = torch.tensor([5, 99999])
    with pytest.raises(ValueError, match=rf"{where}\[1\] holds token id 99999.*vocabulary of {trainer.vocab_size}"):
        trainer.step(queries, responses, [1.0, 0.0])
    (queries if where == "queries" else responses)[1] = torch.tensor([5, -1])
    with pytest.raises(ValueError, match=rf"{where}\[1\] holds token id -1"):
        trainer.step(queries, responses, [1.0, 0.0])


def test_string_and_2d_scores_name_the_score(trainer, monkeypatch):
    _no_model_work(trainer, monkeypatch)
    queries, responses = _rollout()
    with pytest.raises(TypeError, match=r"scores\[1\] is the string '0.5'"):
        trainer.step(queries, responses, [1.0, "0.5"])
    with pytest.raises(ValueError, match=r"Scores must be 1-dimensional.*scores\[0\]"):
        trainer.step(queries, responses, [torch.tensor([[1.0]]), torch.tensor([[0.0]])])
    with pytest.raises(TypeError, match=r"scores\[0\] must be a number"):
        trainer.step(queries, responses, [object(), 0.0])


def test_train_refuses_a_string_of_prompts(trainer, monkeypatch):
    import rlhfkit.trainers.ppo_train as ppo_train

    monkeypatch.setattr(ppo_train, "train_ppo", lambda *a, **k: pytest.fail("train_ppo ran"))
    with pytest.raises(TypeError, match=r"prompts must be a list of strings, got str"):
        trainer.train(lambda p, r: [0.0] * len(r), "the cat")
    with pytest.raises(TypeError, match=r"prompts\[1\] is int"):
        trainer.train(lambda p, r: [0.0] * len(r), ["the cat", 3])
    with pytest.raises(TypeError, match="reward_fn must be callable"):
        trainer.train("not a function", ["the cat"])


def test_trl_constructor_checks(tiny_dirs, tokenizer):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    with pytest.raises(ValueError, match="config must be a PPOConfig"):
        PPOTrainer({"batch_size": 2}, model, None, tokenizer)
    with pytest.raises(ValueError, match="tokenizer must be a PreTrainedTokenizerBase"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, None, "gpt2")
    classifier = AutoModelForSequenceClassification.from_pretrained(tiny_dirs["reward"])
    with pytest.raises(ValueError, match="model must be a PreTrainedModelWrapper"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), classifier, None, tokenizer)
    with pytest.raises(ValueError, match="ref_model must be a PreTrainedModelWrapper or `None`"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, classifier, tokenizer)
    with pytest.raises(ValueError, match="dataset must be a torch.utils.data.Dataset"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, None, tokenizer, dataset="imdb")
    with pytest.raises(ValueError, match="lr_scheduler must be"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, None, tokenizer, lr_scheduler=object())
    with pytest.warns(UserWarning, match="No dataset is provided"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), model, None, tokenizer)


def test_user_patched_zero_grad_is_kept(trainer):
    calls = []
    original = trainer.optimizer.zero_grad
    trainer.optimizer.zero_grad = lambda *a, **k: calls.append((a, k)) or original(set_to_none=False)
    queries, responses = _rollout()
    trainer.step(queries, responses, [1.0, 0.0])
    assert calls and all(c == ((), {}) for c in calls)  # called without overriding arguments
    assert all(p.grad is not None for p in trainer.model.parameters())


def _t5(tokenizer):
    return tiny_t5(tokenizer, seed=0, d_ff=64)


def test_encoder_decoder_ppo_step_trains_and_keeps_reference(tokenizer, tmp_path):
    model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(_t5(tokenizer))
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1, learning_rate=1e-3), model, None, tokenizer)
    assert trainer.is_encoder_decoder and trainer.config.is_encoder_decoder
    queries = [torch.tensor(tokenizer("the cat")["input_ids"]), torch.tensor(tokenizer("a dog runs by")["input_ids"])]
    responses = trainer.generate(queries, return_prompt=False, do_sample=True, max_new_tokens=5)
    assert all(int(r[0]) == model.config.decoder_start_token_id for r in responses)
    ref_before = [p.clone() for p in trainer.ref_model.parameters()]
    before = [p.clone() for p in model.parameters()]
    stats = trainer.step(queries, responses, [1.0, -1.0])
    assert stats["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # same weights, dropout off
    assert all(torch.isfinite(torch.as_tensor(stats[k])) for k in ("ppo/loss/total", "ppo/policy/entropy"))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ref_before, trainer.ref_model.parameters()))
    # the step's log-probs are the classic full-sequence helper's, response tokens only
    inputs = trainer.prepare_model_inputs(queries, responses)
    logprobs, _, _, masks = trainer.batched_forward_pass(trainer.ref_model, queries, responses, inputs)
    assert masks.sum(1).tolist() == [len(r) - 1 for r in responses]  # every token after the start token
    torch.testing.assert_close(logprobs[masks.bool()], torch.as_tensor(stats["objective/ref_logprobs"]).flatten()[
        torch.cat([torch.arange(len(r) - 1) + i * stats["objective/ref_logprobs"].shape[1]
                   for i, r in enumerate(responses)])], rtol=1e-4, atol=1e-4)
    model.save_pretrained(tmp_path)
    again = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(tmp_path)
    torch.testing.assert_close(again.v_head.summary.weight, model.v_head.summary.weight)


def test_encoder_decoder_responses_without_start_token_and_errors(tokenizer):
    model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(_t5(tokenizer))
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=2), model, None, tokenizer)
    queries = [torch.tensor([5, 6, 7]), torch.tensor([8, 9])]
    stats = trainer.step(queries, [torch.tensor([10, 11]), torch.tensor([12])], [1.0, 0.0])
    assert stats["objective/logprobs"].shape == (2, 2)  # the start token is prepended: every token is an action
    with pytest.raises(ValueError, match="critic= and ptx_dataset= are for causal LMs"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=2), model, None, tokenizer, ptx_dataset=["x"])
    with pytest.raises(ValueError, match="not an encoder-decoder"):
        from rlhfkit.testing import tiny_causal_lm

        AutoModelForSeq2SeqLMWithValueHead(tiny_causal_lm("gpt2", tokenizer))
