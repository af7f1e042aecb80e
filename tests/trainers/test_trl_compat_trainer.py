"""PPOTrainer's classic (TRL 0.11) surface on tiny local models.

Covers what scripts written for that API touch: the dataloader, ``step`` with lists of
tensors (and response masks), the statistics it returns, user optimisers and schedulers,
the automatic reference copy and ``num_shared_layers``, the public helper methods
(``batched_forward_pass``, ``compute_rewards``, ``loss``, ``_kl_penalty`` ...), gradient
clipping and accumulation, LoRA policies with a reward adapter, and ``generate``.
The statistic names come from ``tests/fixtures/trl_0_11_4``, recorded from TRL itself.
"""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, set_seed
from rlhfkit.core import LengthSampler, respond_to_batch
from rlhfkit.testing import tiny_t5

pytestmark = pytest.mark.filterwarnings("ignore:No dataset is provided")

TRL_RECORD = json.loads((Path(__file__).parents[1] / "fixtures" / "trl_0_11_4" / "reference.json").read_text())
# what rlhfkit's step adds to TRL's statistics
EXTRA_STATS = {"ppo/loss/ptx", "ppo/mean_raw_scores", "ppo/policy/dual_clipfrac", "ppo/policy/skipped"}

QUERIES = [[14, 31, 7, 52], [9, 40, 22, 17, 63, 5, 28]]
RESPONSES = [[70, 11, 36, 48, 19], [24, 57, 83, 12, 45, 66]]


def _trl_stat_names() -> set:
    step = TRL_RECORD["scenarios"]["default"]["steps"][0]
    return set(step["scalar_stats"]) | set(step["array_stats"]) | set(step["timing_stat_names"])


def _tensors(rows):
    return [torch.tensor(r) for r in rows]


def _clone(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before: dict) -> set:
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


class Pairs(torch.utils.data.Dataset):
    """(query, response) pairs; the default collate stacks equal-length rows."""

    def __init__(self, n: int, width: int = 4):
        gen = torch.Generator().manual_seed(n)
        self.rows = [(torch.randint(5, 100, (width,), generator=gen), torch.randint(5, 100, (width,), generator=gen))
                     for _ in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


@pytest.fixture
def policy(tiny_dirs):
    return AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])


def _trainer(model, tokenizer, ref_model=None, **config):
    return PPOTrainer(PPOConfig(**{"batch_size": 2, "mini_batch_size": 1, **config}), model, ref_model, tokenizer)


# ---------------------------------------------------------------- data and step
def test_dataloader_gives_full_batches_only(policy, tokenizer):
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), policy, None, tokenizer, dataset=Pairs(5))
    batches = list(trainer.dataloader)
    assert len(trainer.dataloader) == len(batches) == 2  # the fifth pair is dropped
    assert all(q.shape == r.shape == (2, 4) for q, r in batches)
    bigger = PPOTrainer(PPOConfig(batch_size=6, mini_batch_size=2), policy, None, tokenizer, dataset=Pairs(5))
    assert len(bigger.dataloader) == 0 and list(bigger.dataloader) == []


def test_step_on_dataloader_batches_reports_the_classic_statistics(policy, tokenizer):
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), policy, None, tokenizer, dataset=Pairs(4))
    before, ref_before = _clone(trainer.model), _clone(trainer.ref_model)
    for queries, responses in trainer.dataloader:
        stats = trainer.step(list(queries), list(responses), [torch.tensor(1.0), torch.tensor(-1.0)])
        break
    assert set(stats) == _trl_stat_names() | EXTRA_STATS
    assert stats["objective/kl"] == 0.0  # policy == reference before the first update
    assert stats["objective/logprobs"].shape == (2, 4) and stats["ppo/mean_scores"] == 0.0
    assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    assert _changed(trainer.model, before) == set(before)  # every parameter trains
    assert not _changed(trainer.ref_model, ref_before)


def test_response_masks_select_the_tokens_that_count(tiny_dirs, tokenizer):
    def run(masks):
        model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"], summary_dropout_prob=0.0)
        return _trainer(model, tokenizer, ppo_epochs=1).step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, 0.5],
                                                             masks)

    plain = run(None)
    ones = run([torch.ones(len(r), dtype=torch.long) for r in RESPONSES])
    partial = run([torch.tensor([1, 1, 1, 0, 0]), torch.tensor([1, 1, 0, 0, 0, 0])])
    assert ones["ppo/loss/total"] == plain["ppo/loss/total"]
    assert ones["ppo/val/vpred"] == plain["ppo/val/vpred"]
    assert partial["ppo/loss/total"] != plain["ppo/loss/total"]
    assert len(partial["ppo/policy/ratio"]) == 5 and len(plain["ppo/policy/ratio"]) == 11  # masked-in tokens only


def test_reference_copy_is_made_and_stays_frozen(policy, tokenizer):
    start = _clone(policy)
    trainer = _trainer(policy, tokenizer)
    assert trainer.ref_model is not None and trainer.ref_model is not policy
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())
    assert all(torch.equal(p, start[n]) for n, p in trainer.ref_model.named_parameters())
    trainer.step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, 0.0])
    assert _changed(policy, start)
    assert all(torch.equal(p, start[n]) for n, p in trainer.ref_model.named_parameters())


def test_user_optimizer_and_scheduler_are_used(policy, tokenizer):
    sgd = torch.optim.SGD(policy.parameters(), lr=0.01)
    decay = torch.optim.lr_scheduler.ExponentialLR(sgd, gamma=0.5)
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), policy, None, tokenizer, optimizer=sgd,
                         lr_scheduler=decay)
    assert trainer.optimizer.optimizer is sgd and trainer.lr_scheduler.scheduler is decay
    start = _clone(policy)
    rates = [trainer.step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, 0.0])["ppo/learning_rate"] for _ in range(3)]
    assert rates == pytest.approx([0.01, 0.005, 0.0025])  # the scheduler steps once per step()
    assert _changed(policy, start)


def test_num_shared_layers_trains_only_the_layers_above(policy, tokenizer):
    trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), policy, None, tokenizer, num_shared_layers=1)
    start = _clone(policy)
    trainer.step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, 0.0])
    changed = _changed(policy, start)
    bottom = {n for n in start if ".wte." in n or ".wpe." in n or ".h.0." in n}
    assert bottom and not changed & bottom
    assert not any(policy.get_parameter(n).requires_grad for n in bottom)
    assert changed == set(start) - bottom  # layer 1, the final norm and the value head
    assert trainer.ref_model.get_parameter(sorted(bottom)[0]) is policy.get_parameter(sorted(bottom)[0])
    with pytest.warns(UserWarning, match="num_shared_layers is ignored"):
        PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1), policy, copy.deepcopy(policy), tokenizer,
                   num_shared_layers=1)


def test_wrong_step_inputs_are_refused_before_any_work(policy, tokenizer):
    trainer = _trainer(policy, tokenizer)
    queries, responses = _tensors(QUERIES), _tensors(RESPONSES)
    with pytest.raises(ValueError, match="Scores must be 1-dimensional"):
        trainer.step(queries, responses, [torch.tensor([[1.0]]), torch.tensor([[0.0]])])
    with pytest.raises(ValueError, match="batch_size is 2"):
        trainer.step(queries[:1], responses[:1], [1.0])
    with pytest.raises(ValueError, match="queries must be a list of tensors"):
        trainer.step(torch.tensor([[5, 6], [7, 8]]), responses, [1.0, 0.0])
    with pytest.raises(ValueError, match="must have the same length"):
        trainer.step(queries, responses, [1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="batch_size: must be a multiple of mini_batch_size"):
        PPOConfig(batch_size=2, mini_batch_size=2, gradient_accumulation_steps=2)
    checked_q, checked_r, scores, masks = trainer._step_safety_checker(2, queries, responses, [1.0, torch.tensor(0.0)])
    assert isinstance(checked_q, list) and isinstance(checked_r, list) and masks is None
    assert [q.tolist() for q in checked_q] == QUERIES and [r.tolist() for r in checked_r] == RESPONSES
    assert isinstance(scores, list) and [float(s) for s in scores] == [1.0, 0.0]
    assert trainer.step(queries, responses, [torch.tensor([1.0]), torch.tensor([0.0])])["ppo/mean_scores"] == 0.5


def test_trainer_without_dataset_warns_and_steps(policy, tokenizer):
    with pytest.warns(UserWarning, match="No dataset is provided"):
        trainer = PPOTrainer(PPOConfig(batch_size=1, mini_batch_size=1), policy, None, tokenizer)
    assert trainer.dataloader is None
    query = torch.tensor([QUERIES[1]])
    response = respond_to_batch(policy, query, txt_len=5)
    assert response.shape == (1, 5)
    stats = trainer.step([query[0]], [response[0]], [torch.tensor(0.7)])
    assert stats["ppo/mean_scores"] == pytest.approx(0.7) and math.isfinite(stats["ppo/loss/total"])


# ---------------------------------------------------------------- the public helper methods
def _ppo_losses_by_hand(cfg, old_logprobs, old_values, logprobs, values, advantages, returns, mask):
    """Clipped surrogate (Schulman et al. 2017, eq. 7) and clipped value loss, one token at a time."""
    policy_terms, value_terms = [], []
    for t in torch.nonzero(mask[0]).flatten().tolist():
        ratio = math.exp(float(logprobs[0, t] - old_logprobs[0, t]))
        adv, ret, v_old, v_new = (float(x[0, t]) for x in (advantages, returns, old_values, values))
        clipped_ratio = min(max(ratio, 1 - cfg.cliprange), 1 + cfg.cliprange)
        policy_terms.append(-min(ratio * adv, clipped_ratio * adv))
        v_clipped = v_old + min(max(v_new - v_old, -cfg.cliprange_value), cfg.cliprange_value)
        value_terms.append(0.5 * max((v_new - ret) ** 2, (v_clipped - ret) ** 2))
    n = len(policy_terms)
    return sum(policy_terms) / n, cfg.vf_coef * sum(value_terms) / n


def test_classic_helpers_compute_rewards_advantages_and_losses(policy, tokenizer):
    trainer = _trainer(policy, tokenizer)
    queries, responses = _tensors(QUERIES), _tensors(RESPONSES)
    inputs = trainer.prepare_model_inputs(queries, responses)
    logprobs, logits, values, mask = trainer.batched_forward_pass(policy, queries, responses, inputs,
                                                                  return_logits=True)
    assert mask.sum(1).tolist() == [5, 6] and logits.shape[:2] == logprobs.shape
    ref_logprobs = logprobs - 0.3
    rewards, non_score, kls = trainer.compute_rewards(torch.tensor([2.0, -1.0]), logprobs, ref_logprobs, mask)
    torch.testing.assert_close(kls, logprobs - ref_logprobs)
    torch.testing.assert_close(non_score, -trainer.kl_ctl.value * kls)
    score_part = rewards - non_score  # the score sits on each row's last response token
    last = [int(torch.nonzero(m).max()) for m in mask]
    assert [float(score_part[i, last[i]]) for i in range(2)] == pytest.approx([2.0, -1.0])
    assert float(score_part.abs().sum()) == pytest.approx(3.0)
    masked_values, advantages, returns = trainer.compute_advantages(values, rewards, mask)
    assert float((advantages * mask).sum() / mask.sum()) == pytest.approx(0.0, abs=1e-5)  # whitened
    assert float(masked_values[mask == 0].abs().sum()) == 0.0

    new_values, new_logprobs = masked_values + 0.15, logprobs + torch.linspace(-0.4, 0.4, logprobs.shape[1])
    row = [t[:1] for t in (logprobs, masked_values, logits, new_values, new_logprobs, mask, advantages, returns)]
    pg, vf, stats = trainer.loss(*row)
    expected_pg, expected_vf = _ppo_losses_by_hand(trainer.config, row[0], row[1], row[4], row[3], row[6], row[7],
                                                   row[5])
    pg, vf = pg.item(), vf.item()
    assert pg == pytest.approx(expected_pg, abs=1e-5) and vf == pytest.approx(expected_vf, abs=1e-5)
    assert float(stats["loss/total"]) == pytest.approx(expected_pg + expected_vf, abs=1e-5)
    keep = mask[0].bool()  # the same tokens without the masked-out columns give the same losses
    squeezed = [t[:1][:, keep] for t in (logprobs, masked_values, logits, new_values, new_logprobs, mask, advantages,
                                         returns)]
    pg2, vf2, _ = trainer.loss(*squeezed)
    assert pg2.item() == pytest.approx(pg, abs=1e-6) and vf2.item() == pytest.approx(vf, abs=1e-6)


@pytest.fixture(scope="module")
def t5(tokenizer):
    return tiny_t5(tokenizer, seed=3, d_ff=48)


@pytest.mark.parametrize("arch", ["gpt2", "llama-left-padded", "t5"])
def test_batched_forward_pass_does_not_depend_on_batching(tiny_dirs, tokenizer, t5, arch):
    if arch == "t5":
        model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(copy.deepcopy(t5))
    else:
        model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs[arch.split("-")[0]])
    if arch.endswith("left-padded"):
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.padding_side = "left"
    trainer = _trainer(model, tokenizer)
    queries, responses = _tensors(QUERIES), _tensors(RESPONSES)

    def per_row(qs, rs, chunk):
        trainer.config.mini_batch_size = chunk
        logprobs, _, values, mask = trainer.batched_forward_pass(model, qs, rs, trainer.prepare_model_inputs(qs, rs))
        return [(lp[m.bool()], v[m.bool()]) for lp, v, m in zip(logprobs, values, mask)]

    alone = [per_row([q], [r], 1)[0] for q, r in zip(queries, responses)]
    for chunk in (1, 2):
        for (lp, v), (lp_alone, v_alone) in zip(per_row(queries, responses, chunk), alone):
            assert len(lp) == len(lp_alone) > 0
            torch.testing.assert_close(lp, lp_alone, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(v, v_alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind, expected", [
    ("kl", [[0.5, -0.25, 0.0], [-1.0, 0.125, 0.75]]),
    ("abs", [[0.5, 0.25, 0.0], [1.0, 0.125, 0.75]]),
    ("mse", [[0.125, 0.03125, 0.0], [0.5, 0.0078125, 0.28125]]),  # half the squared log-ratio
])
def test_kl_estimators_per_token(policy, tokenizer, kind, expected):
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -0.375, -1.25]])
    ref_logprobs = torch.tensor([[-1.5, -1.75, -0.5], [-2.0, -0.5, -2.0]])
    trainer = _trainer(policy, tokenizer, kl_penalty=kind)
    torch.testing.assert_close(trainer._kl_penalty(logprobs, ref_logprobs), torch.tensor(expected))


def test_full_kl_sums_over_the_vocabulary(policy, tokenizer):
    trainer = _trainer(policy, tokenizer, kl_penalty="full")
    p = torch.tensor([[[0.5, 0.5, 0.0 + 1e-12], [0.2, 0.3, 0.5]]]).log()  # (1, 2, 3) log-probs
    q = torch.tensor([[[0.25, 0.75, 1e-12], [0.2, 0.3, 0.5]]]).log()
    # position 0: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3); position 1: identical distributions
    torch.testing.assert_close(trainer._kl_penalty(p, q), torch.tensor([[0.5 * math.log(4 / 3), 0.0]]),
                               rtol=1e-5, atol=1e-6)
    assert float(trainer._kl_penalty(q, p)[0, 0]) > 0  # not symmetric, still positive


# ---------------------------------------------------------------- optimisation mechanics
def _displacement(model, before: dict) -> float:
    return math.sqrt(sum(float((p - before[n]).square().sum()) for n, p in model.named_parameters()))


def test_max_grad_norm_bounds_every_optimiser_step(tiny_dirs, tokenizer):
    """With SGD at learning rate 1 an update moves the weights by exactly the (clipped) gradient."""
    def run(max_grad_norm):
        model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
        trainer = PPOTrainer(PPOConfig(batch_size=2, mini_batch_size=1, ppo_epochs=2, max_grad_norm=max_grad_norm),
                             model, None, tokenizer, optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
        start = _clone(model)
        trainer.step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, -1.0])
        return _displacement(model, start)

    steps, bound = 4, 1e-4  # 2 epochs x 2 minibatches
    clipped = run(bound)
    assert 0 < clipped <= steps * bound * (1 + 1e-4)
    assert run(None) > 100 * steps * bound  # without clipping the same updates are far larger


@pytest.mark.parametrize("learning_rate", [1e-3])
def test_two_accumulated_half_batches_update_like_one_full_batch(tiny_dirs, tokenizer, learning_rate):
    start = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    initial = _clone(start)
    queries = [torch.tensor(QUERIES[1][:5]), torch.tensor(QUERIES[0] + [3])]  # equal lengths: equal token weights
    responses = [torch.tensor(RESPONSES[1][:5]), torch.tensor(RESPONSES[0])]
    models = {}
    for name, mini, accumulate in (("full", 2, 1), ("accumulated", 1, 2)):
        models[name] = copy.deepcopy(start)
        config = PPOConfig(batch_size=2, mini_batch_size=mini, gradient_accumulation_steps=accumulate, ppo_epochs=1,
                           learning_rate=learning_rate)
        PPOTrainer(config, models[name], None, tokenizer).step(queries, responses, [1.0, 0.2])
    moved = _changed(models["full"], initial)
    assert "v_head.summary.weight" in moved and any(".h.1." in n for n in moved)  # it trained
    assert _displacement(models["full"], initial) > 0.1 * learning_rate
    for name, p in models["accumulated"].named_parameters():
        torch.testing.assert_close(p, models["full"].get_parameter(name), rtol=1e-4, atol=learning_rate * 1e-2,
                                   msg=name)


# ---------------------------------------------------------------- LoRA policies
def _lora(task_type="CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none", task_type=task_type)


def _two_steps_with_checkpointing(model, tokenizer):
    trainer = _trainer(model, tokenizer)
    assert trainer.ref_model is None  # the policy with its adapter switched off is the reference
    first = trainer.step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, -1.0])
    trainer.model.gradient_checkpointing_enable()
    second = trainer.step(_tensors(QUERIES), _tensors(RESPONSES), [1.0, -1.0])
    assert first["objective/kl"] == 0.0 and second["objective/kl"] != 0.0
    return trainer


def test_lora_policy_trains_the_adapter_and_value_head_only(tiny_dirs, tokenizer):
    pytest.importorskip("peft")
    from peft import get_peft_model

    model = AutoModelForCausalLMWithValueHead.from_pretrained(
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"]), _lora()))
    assert model.is_peft_model
    start = _clone(model)
    _two_steps_with_checkpointing(model, tokenizer)
    changed = _changed(model, start)
    trained = {n for n in start if "lora_" in n or n.startswith("v_head.")}
    assert any("lora_B" in n for n in trained) and changed == trained


def test_reward_adapter_scores_like_the_saved_classifier(tiny_dirs, tokenizer, tmp_path):
    pytest.importorskip("peft")
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    ids = torch.tensor([[8, 16, 23, 42, 4], [15, 9, 26, 53, 5]])
    classifier = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_dirs["gpt2"], num_labels=1),
                                _lora("SEQ_CLS"))
    untrained = classifier(ids).logits.detach()
    classifier(ids).logits.sum().backward()
    torch.optim.SGD([p for p in classifier.parameters() if p.requires_grad], lr=1.0).step()
    trained = classifier.eval()(ids).logits.detach()
    assert not torch.allclose(untrained, trained)
    classifier.save_pretrained(tmp_path)

    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"], peft_config=_lora(),
                                                              reward_adapter=tmp_path)
    torch.testing.assert_close(model.compute_reward_score(ids)[:, -1], trained, rtol=1e-5, atol=1e-5)
    start = _clone(model)
    _two_steps_with_checkpointing(model, tokenizer)
    changed = _changed(model, start)
    assert changed and all(("lora_" in n and "reward_adapter" not in n) or n.startswith("v_head.") for n in changed)
    torch.testing.assert_close(model.compute_reward_score(ids)[:, -1], trained, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- generate
GREEDY = {"do_sample": False, "max_new_tokens": 5}
TEXTS = ("the cat sings", "a robot waits by the river all night")


@pytest.fixture
def llama(tiny_dirs):
    """Untied embeddings: greedy decoding of a random GPT-2 just repeats the last query token."""
    return AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["llama"])


def _as_lists(rows):
    return [r.tolist() for r in rows]


def test_batched_generation_equals_one_query_at_a_time(llama, tokenizer):
    trainer = _trainer(llama, tokenizer)
    queries = [torch.tensor(tokenizer.encode(t)) for t in TEXTS]
    batched = trainer.generate(queries, batch_size=2, return_prompt=False, **GREEDY)
    one_by_one = [trainer.generate(q, return_prompt=False, **GREEDY) for q in queries]
    assert all(o.shape[0] == 1 for o in one_by_one)  # a single query gives a (1, L) tensor
    assert _as_lists(batched) == [o[0].tolist() for o in one_by_one]
    assert len(set(map(tuple, _as_lists(batched)))) == 2 and all(len(set(r)) > 1 for r in _as_lists(batched))
    with_prompt = trainer.generate(queries, batch_size=2, **GREEDY)
    assert _as_lists(with_prompt) == [q.tolist() + r.tolist() for q, r in zip(queries, batched)]


def test_length_sampler_draws_the_response_length_of_each_batch(llama, tokenizer):
    trainer = _trainer(llama, tokenizer)
    queries = [torch.tensor([5 + i, 17, 29]) for i in range(4)]
    sampler = LengthSampler(2, 6)
    set_seed(11)
    drawn = [sampler() for _ in range(2)]  # two batches of two
    set_seed(11)
    responses = trainer.generate(queries, length_sampler=sampler, batch_size=2, return_prompt=False,
                                 do_sample=True, eos_token_id=None)
    assert [len(r) for r in responses] == [drawn[0]] * 2 + [drawn[1]] * 2


def test_reference_responses_come_from_the_reference(llama, tiny_dirs, tokenizer):
    queries = [torch.tensor(tokenizer.encode(t)) for t in TEXTS]
    policy_out, copy_out = _trainer(llama, tokenizer).generate(queries, generate_ref_response=True,
                                                               return_prompt=False, **GREEDY)
    assert _as_lists(policy_out) == _as_lists(copy_out)  # the reference copy of an untrained policy

    other = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])  # same vocabulary, other weights
    trainer = _trainer(llama, tokenizer, ref_model=other)
    responses, ref_responses = trainer.generate(queries, batch_size=2, generate_ref_response=True,
                                                return_prompt=False, **GREEDY)
    singles = [trainer.generate(q, generate_ref_response=True, return_prompt=False, **GREEDY) for q in queries]
    assert _as_lists(responses) == [s[0][0].tolist() for s in singles] == _as_lists(policy_out)
    assert _as_lists(ref_responses) == [s[1][0].tolist() for s in singles]
    assert _as_lists(responses) != _as_lists(ref_responses)
