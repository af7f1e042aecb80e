"""TRL 0.11.4's ``tests/test_ppo_trainer.py``, ported to local tiny models.

Changes from TRL: hub models become tiny random ones (GPT-2, Llama with a left-padding
tokenizer where TRL used Bloom, T5); the query's token count depends on the tokenizer, so
its exact shape is not asserted; ``test_loss_trainer`` compares with a naive re-computation
of TRL's formulas instead of numbers of TRL's hub model. Skipped from TRL: the two
push-to-hub tests and the multi-GPU PEFT test (need a hub / two GPUs).
"""

import copy
import re
from functools import partial

import pytest
import torch
from transformers import AutoModelForCausalLM, T5Config, T5ForConditionalGeneration

from rlhfkit import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, set_seed
from rlhfkit.core import respond_to_batch

EXPECTED_STATS = [
    "objective/kl", "objective/kl_dist", "objective/logprobs", "objective/ref_logprobs", "objective/kl_coef",
    "objective/entropy", "ppo/mean_non_score_reward", "ppo/loss/policy", "ppo/loss/value", "ppo/loss/total",
    "ppo/policy/entropy", "ppo/policy/approxkl", "ppo/policy/policykl", "ppo/policy/clipfrac",
    "ppo/policy/advantages", "ppo/policy/advantages_mean", "ppo/policy/ratio", "ppo/returns/mean",
    "ppo/returns/var", "ppo/val/vpred", "ppo/val/error", "ppo/val/clipfrac", "ppo/val/mean", "ppo/val/var",
    "ppo/val/var_explained", "time/ppo/forward_pass", "time/ppo/compute_rewards", "time/ppo/optimize_step",
    "time/ppo/calc_stats", "time/ppo/total", "ppo/learning_rate",
]

pytestmark = pytest.mark.filterwarnings("ignore:No dataset is provided")


class DummyDataset(torch.utils.data.Dataset):
    def __init__(self, query_data, response_data):
        self.query_data, self.response_data = query_data, response_data

    def __len__(self):
        return len(self.query_data)

    def __getitem__(self, idx):
        return self.query_data[idx], self.response_data[idx]


def apply_mask(values, mask):
    return torch.Tensor([v for v, m in zip(values, mask) if m == 1])


def abs_diff_masked_tensors(tensor_1, tensor_2, mask_1, mask_2):
    return abs(sum((apply_mask(a, m1) - apply_mask(b, m2)).sum() for a, b, m1, m2 in zip(tensor_1, tensor_2, mask_1, mask_2)))


@pytest.fixture
def env(tiny_dirs, tokenizer):
    set_seed(42)
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token
    return {"path": tiny_dirs["gpt2"], "tok": tok,
            "gpt2_model": AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"]),
            "gpt2_ref_model": AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])}


def _init_dummy_dataset(env):
    query_tensor = env["tok"].encode("This morning I went to the ", return_tensors="pt")
    response_tensor = respond_to_batch(env["gpt2_model"], query_tensor)
    assert response_tensor.shape == (1, 20)
    n = min(len(query_tensor[0]), len(response_tensor[0]))
    return DummyDataset([query_tensor[:, :n].squeeze(0) for _ in range(2)],
                        [response_tensor[:, :n].squeeze(0) for _ in range(2)])


def _trainer(env, ref=True, **cfg):
    ppo_config = PPOConfig(**{"batch_size": 2, "mini_batch_size": 1, "log_with": None, **cfg})
    trainer = PPOTrainer(config=ppo_config, model=env["gpt2_model"], ref_model=env["gpt2_ref_model"] if ref else None,
                         tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    return trainer


def _one_step(trainer, reward=(1.0, 0.0), masks=False):
    for query_tensor, response_tensor in trainer.dataloader:
        rewards = [torch.tensor(r) for r in reward]
        response_mask = [torch.ones_like(r) for r in response_tensor] if masks else None
        return trainer.step(list(query_tensor), list(response_tensor), rewards, response_mask)


def _assert_grads(trainer):
    for name, param in trainer.model.named_parameters():
        assert param.grad is not None, f"Parameter {name} has no gradient"
    for name, param in (trainer.ref_model.named_parameters() if trainer.ref_model is not None else ()):
        assert param.grad is None, f"Parameter {name} has a gradient"


def test_drop_last_dataloader(env):
    trainer = PPOTrainer(config=PPOConfig(batch_size=3, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                         ref_model=env["gpt2_ref_model"], tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    assert len(trainer.dataloader) == 0


@pytest.mark.parametrize("masks", [False, True])
def test_ppo_step(env, masks):
    trainer = _trainer(env)
    train_stats = _one_step(trainer, masks=masks)
    _assert_grads(trainer)
    assert all(stat in train_stats for stat in EXPECTED_STATS)


def test_ppo_step_with_no_ref_sgd(env):
    optimizer = torch.optim.SGD(env["gpt2_model"].parameters(), lr=0.01)
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                         ref_model=None, optimizer=optimizer, tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)
    train_stats = _one_step(trainer)
    _assert_grads(trainer)
    assert all(stat in train_stats for stat in EXPECTED_STATS)


def test_ppo_step_with_no_ref_sgd_lr_scheduler(env):
    optimizer = torch.optim.SGD(env["gpt2_model"].parameters(), lr=0.01)
    lr_scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    ppo_config = PPOConfig(batch_size=2, mini_batch_size=1, log_with=None)
    trainer = PPOTrainer(config=ppo_config, model=env["gpt2_model"], ref_model=None, optimizer=optimizer,
                         tokenizer=env["tok"], dataset=_init_dummy_dataset(env), lr_scheduler=lr_scheduler)
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)
    assert isinstance(trainer.lr_scheduler.scheduler, torch.optim.lr_scheduler.ExponentialLR)
    _one_step(trainer)
    train_stats = _one_step(trainer)
    _assert_grads(trainer)
    assert all(stat in train_stats for stat in EXPECTED_STATS)
    assert train_stats["ppo/learning_rate"] > ppo_config.learning_rate
    assert train_stats["ppo/learning_rate"] == pytest.approx(0.01 * 0.9)  # one scheduler step after step 1


def test_ppo_step_with_no_ref(env):
    trainer = _trainer(env, ref=False)
    train_stats = _one_step(trainer)
    _assert_grads(trainer)
    fresh = AutoModelForCausalLMWithValueHead.from_pretrained(env["path"]).state_dict()
    for name, param in trainer.ref_model.named_parameters():
        if "v_head" not in name:
            assert torch.allclose(param.cpu(), fresh[name.replace("pretrained_model.", "")].cpu()), name
    assert all(stat in train_stats for stat in EXPECTED_STATS)


def test_ppo_step_with_no_ref_custom_layers(env):
    num_shared_layers = 1
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                         ref_model=None, tokenizer=env["tok"], dataset=_init_dummy_dataset(env),
                         num_shared_layers=num_shared_layers)
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    train_stats = _one_step(trainer)
    pattern, final_layers = r".*transformer\.h\.(\d+)\..*", ["ln_f", "v_head", "lm_head"]
    for name, param in trainer.model.named_parameters():
        if re.match(pattern, name):
            if int(re.match(pattern, name).groups(0)[0]) < num_shared_layers:
                assert param.grad is None, f"Parameter {name} has a gradient"
            else:
                assert param.grad is not None, f"Parameter {name} has no gradient"
        elif any(layer in name for layer in final_layers):
            assert param.grad is not None, f"Parameter {name} has no gradient"
    for name, param in trainer.ref_model.named_parameters():
        assert param.grad is None, f"Parameter {name} has a gradient"
    assert all(stat in train_stats for stat in EXPECTED_STATS)


def test_ppo_step_with_ref_and_custom_layers_warning(env):
    with pytest.warns(UserWarning, match="num_shared_layers is ignored"):
        PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                   ref_model=env["gpt2_ref_model"], tokenizer=env["tok"], dataset=_init_dummy_dataset(env),
                   num_shared_layers=6)


def test_ppo_step_rewards_shape(env):
    trainer = _trainer(env, ref=False)
    for query_tensor, response_tensor in trainer.dataloader:
        with pytest.raises(ValueError):
            trainer.step(list(query_tensor), list(response_tensor), [torch.tensor([[1.0]]), torch.tensor([[0.0]])])
        trainer.step(list(query_tensor), list(response_tensor), [torch.tensor([1.0]), torch.tensor([0.0])])
        break
    _assert_grads(trainer)


def test_ppo_step_input_shape(env):
    trainer = _trainer(env, ref=False)
    for query_tensor, response_tensor in trainer.dataloader:
        bs = trainer.config.batch_size
        queries, responses, _, _ = trainer._step_safety_checker(bs, list(query_tensor), list(response_tensor),
                                                                [torch.tensor([1.0]), torch.tensor([0.0])])
        assert isinstance(queries, list) and isinstance(responses, list)
        for i in range(bs):
            assert queries[i].shape == query_tensor[i].shape and responses[i].size() == response_tensor[i].size()
        break


def test_ppo_step_no_dataset(env):
    query_tensor = env["tok"].encode("This morning I went to the ", return_tensors="pt")
    response_tensor = respond_to_batch(env["gpt2_model"], query_tensor)
    with pytest.warns(UserWarning, match="No dataset is provided"):
        trainer = PPOTrainer(config=PPOConfig(batch_size=1, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                             ref_model=env["gpt2_ref_model"], tokenizer=env["tok"])
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    train_stats = trainer.step([query_tensor[0]], [response_tensor[0]], [torch.tensor([1.0])])
    _assert_grads(trainer)
    assert all(stat in train_stats for stat in EXPECTED_STATS)


def _naive_trl_loss(cfg, old_logprobs, values, logits, vpreds, logprobs, mask, advantages, returns):
    """TRL 0.11.4's PPOTrainer.loss written out element by element (the reference)."""
    pg, vf, n = 0.0, 0.0, 0.0
    for t in range(mask.shape[-1]):
        if mask[0, t] == 0:
            continue
        ratio = torch.exp(logprobs[0, t] - old_logprobs[0, t])
        a, r = advantages[0, t], returns[0, t]
        pg += max(-a * ratio, -a * min(max(ratio, 1 - cfg.cliprange), 1 + cfg.cliprange))
        clipped = min(max(vpreds[0, t], values[0, t] - cfg.cliprange_value), values[0, t] + cfg.cliprange_value)
        vf += max((vpreds[0, t] - r) ** 2, (clipped - r) ** 2)
        n += 1
    return pg / n, cfg.vf_coef * 0.5 * vf / n


def test_loss_trainer(env):
    env["gpt2_model"].eval()
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                         ref_model=None, tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    dummy_queries = [torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 3, 4, 5, 6, 7])]
    dummy_responses = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([8, 9, 10, 11, 12, 13])]
    dummy_scores = torch.Tensor([1, 2])
    trainer.config.mini_batch_size = 1
    trainer.config.batch_size = 1
    model_inputs = trainer.prepare_model_inputs(dummy_queries, dummy_responses)
    all_logprobs, _, values, mask = trainer.batched_forward_pass(env["gpt2_model"], dummy_queries, dummy_responses,
                                                                 model_inputs)
    assert mask.sum(1).tolist() == [5, 6]  # exactly the response tokens
    ref_logprobs = all_logprobs + 1
    logits = torch.exp(all_logprobs)
    vpreds = values + 0.1
    score, non_score, kls = trainer.compute_rewards(dummy_scores, all_logprobs, ref_logprobs, mask)
    torch.testing.assert_close(kls, all_logprobs - ref_logprobs)
    values, advantages, returns = trainer.compute_advantages(values, score, mask)
    idx = 0
    args = [t[idx].unsqueeze(0) for t in (all_logprobs, values, logits, vpreds, ref_logprobs, mask, advantages, returns)]
    pg_loss, v_loss, _ = trainer.loss(*args)
    expected_pg, expected_v = _naive_trl_loss(trainer.config, *args)
    assert abs(pg_loss.item() - float(expected_pg)) < 1e-4 and abs(v_loss.item() - float(expected_v)) < 1e-4
    unmasked = [apply_mask(t[idx], mask[idx]).unsqueeze(0)
                for t in (all_logprobs, values, logits, vpreds, ref_logprobs, mask, advantages, returns)]
    pg_loss_unmasked, v_loss_unmasked, _ = trainer.loss(*unmasked)
    assert abs(pg_loss_unmasked.item() - pg_loss.item()) < 1e-4
    assert abs(v_loss_unmasked.item() - v_loss.item()) < 1e-4


@pytest.fixture(scope="module")
def t5_model(tokenizer):
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4, dropout_rate=0.0,
                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id)
    return T5ForConditionalGeneration(cfg)


@pytest.mark.parametrize("name", ["gpt2", "llama_left_padding", "t5"])
def test_batched_forward_pass(env, tiny_dirs, t5_model, name):
    dummy_queries = [torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 3, 4, 5, 6, 7])]
    dummy_responses = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([8, 9, 10, 11, 12, 13])]
    tokenizer = env["tok"]
    if name == "gpt2":
        model = env["gpt2_model"]
    elif name == "llama_left_padding":  # TRL used Bloom for a tokenizer that pads on the left
        model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["llama"])
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.padding_side = "left"
    else:
        model = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(copy.deepcopy(t5_model))
    model.eval()
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=model,
                         ref_model=None, tokenizer=tokenizer, dataset=_init_dummy_dataset(env))
    trainer.config.mini_batch_size = 1
    trainer.config.batch_size = 1
    inputs = trainer.prepare_model_inputs([dummy_queries[0]], [dummy_responses[0]])
    logprobs_0, _, values_0, mask_0 = trainer.batched_forward_pass(model, [dummy_queries[0]], [dummy_responses[0]], inputs)
    trainer.config.batch_size = 2
    inputs = trainer.prepare_model_inputs(dummy_queries, dummy_responses)
    logprobs_1, _, values_1, mask_1 = trainer.batched_forward_pass(model, dummy_queries, dummy_responses, inputs)
    trainer.config.mini_batch_size = 2
    inputs = trainer.prepare_model_inputs(dummy_queries, dummy_responses)
    logprobs_2, _, values_2, mask_2 = trainer.batched_forward_pass(model, dummy_queries, dummy_responses, inputs)
    assert abs_diff_masked_tensors(logprobs_1, logprobs_2, mask_1, mask_2) <= 0.0001
    assert abs_diff_masked_tensors(values_1, values_2, mask_1, mask_2) <= 0.0001
    assert abs_diff_masked_tensors(logprobs_0, logprobs_2[:1], mask_0, mask_2[:1]) <= 0.0001
    assert abs_diff_masked_tensors(values_0, values_2[:1], mask_0, mask_2[:1]) <= 0.0001
    assert mask_2.sum().item() > 0


def test_ppo_trainer_max_grad_norm(env):
    trainer = _trainer(env, ref=False, max_grad_norm=0.00001)
    _one_step(trainer)
    for name, param in trainer.model.named_parameters():
        assert param.grad is not None, f"Parameter {name} has no gradient"
        assert torch.all(param.grad.abs() <= 0.00001), f"Parameter {name} has a gradient larger than max_grad_norm"


def test_ppo_trainer_kl_penalty(env):
    log_probs = torch.Tensor([[0.5, 0.2, 0.1], [0.6, 0.2, 0.1]])
    ref_log_probs = torch.Tensor([[0.4, 0.3, 0.0], [0.7, 0.1, 0.3]])
    expected = {"kl": [[0.1, -0.1, 0.1], [-0.1, 0.1, -0.2]], "abs": [[0.1, 0.1, 0.1], [0.1, 0.1, 0.2]],
                "mse": [[0.005, 0.005, 0.005], [0.005, 0.005, 0.02]]}
    for kind, out in expected.items():
        trainer = _trainer(env, ref=False, kl_penalty=kind)
        assert torch.allclose(trainer._kl_penalty(log_probs, ref_log_probs), torch.Tensor(out))


def test_ppo_trainer_full_kl_penalty(env):
    trainer = _trainer(env, ref=False, kl_penalty="full")
    same = torch.Tensor([[[0.1, 0.2, 0.7], [0.3, 0.4, 0.3]]]).exp()
    out = trainer._kl_penalty(same, same.clone())
    assert out.shape == (1, 2) and torch.allclose(out, torch.Tensor([[0.0, 0.0]]))
    lp = torch.Tensor([[[0.98, 0.01, 0.01], [0.01, 0.98, 0.01]]]).log()
    ref = torch.Tensor([[[0.01, 0.01, 0.98], [0.01, 0.01, 0.98]]]).log()
    out = trainer._kl_penalty(lp, ref)
    assert out.shape == (1, 2) and torch.allclose(out, torch.Tensor([[4.4474, 4.4474]]))
    lp = torch.Tensor([[[0.49, 0.02, 0.49], [0.49, 0.02, 0.49]]]).log()
    ref = torch.Tensor([[[0.01, 0.98, 0.01], [0.49, 0.02, 0.49]]]).log()
    out = trainer._kl_penalty(lp, ref)
    assert out.shape == (1, 2) and torch.allclose(out, torch.Tensor([[3.7361, 0.0]]), atol=0.0001)


def _lora(task_type="CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type=task_type)


def _peft_policy(path, **kwargs):
    from peft import get_peft_model

    gpt2_model = AutoModelForCausalLM.from_pretrained(path)
    gpt2_model.get_input_embeddings().register_forward_hook(lambda module, input, output: output.requires_grad_(True))
    return AutoModelForCausalLMWithValueHead.from_pretrained(get_peft_model(gpt2_model, _lora()), **kwargs)


def _two_peft_steps(env, model):
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=model,
                         ref_model=None, tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    trainer.optimizer.zero_grad = partial(trainer.optimizer.zero_grad, set_to_none=False)
    assert trainer.ref_model is None
    _one_step(trainer)
    trainer.model.train()
    trainer.model.gradient_checkpointing_enable()
    _one_step(trainer)
    return trainer


def test_peft_model_ppo_trainer(env):
    model = _peft_policy(env["path"])
    _two_peft_steps(env, model)
    for name, param in model.named_parameters():
        if "lora" in name or "v_head" in name:
            assert param.grad is not None, f"Parameter {name} has a no gradient"
        else:
            assert param.grad is None, f"Parameter {name} has a gradient"


def test_peft_model_ppo_adapter_rm_trainer(env, tmp_path):
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification

    dummy_inputs = torch.LongTensor([[5, 6, 7, 8, 9], [5, 6, 7, 8, 9]])
    reward_model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(env["path"]), _lora("SEQ_CLS"))
    dummy_optim = torch.optim.Adam(filter(lambda p: p.requires_grad, reward_model.parameters()), lr=1e-3)
    previous_rm_logits = reward_model(dummy_inputs).logits
    previous_rm_logits.mean().backward()
    dummy_optim.step()
    reward_model.eval()
    original_rm_logits = reward_model(dummy_inputs).logits
    reward_model.save_pretrained(tmp_path)

    model = _peft_policy(env["path"], reward_adapter=tmp_path)
    trainer = _two_peft_steps(env, model)
    new_logits = trainer.model.compute_reward_score(dummy_inputs)
    assert not torch.allclose(previous_rm_logits, new_logits[:, -1, :])
    assert torch.allclose(original_rm_logits, new_logits[:, -1, :])
    for name, param in model.named_parameters():
        if ("lora" in name or "v_head" in name) and ("reward" not in name):
            assert param.grad is not None, f"Parameter {name} has a no gradient"
        else:
            assert param.grad is None, f"Parameter {name} has a gradient"


def test_generation(env):
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=env["gpt2_model"],
                         ref_model=None, tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    tok = env["tok"]
    generation_kwargs = {"do_sample": False, "max_new_tokens": 4, "pad_token_id": tok.eos_token_id}
    model_inputs = [tok(t, return_tensors="pt").input_ids.squeeze() for t in ["this is a test", "this is another, longer test"]]
    batched = tok.batch_decode(trainer.generate(model_inputs, batch_size=2, **generation_kwargs))
    single = tok.batch_decode([trainer.generate(i, **generation_kwargs).squeeze() for i in model_inputs])
    assert single == batched


def test_generation_with_ref_model(env):
    model = env["gpt2_model"]
    ref_model = copy.deepcopy(model)
    # untie first: on a tiny random GPT-2, negating the tied embedding too keeps the greedy tokens
    head = ref_model.pretrained_model.lm_head
    head.weight = torch.nn.Parameter(-head.weight.detach().clone())
    trainer = PPOTrainer(config=PPOConfig(batch_size=2, mini_batch_size=1, log_with=None), model=model,
                         ref_model=ref_model, tokenizer=env["tok"], dataset=_init_dummy_dataset(env))
    tok = env["tok"]
    generation_kwargs = {"do_sample": False, "max_new_tokens": 4, "pad_token_id": tok.eos_token_id}
    model_inputs = [tok(t, return_tensors="pt").input_ids.squeeze() for t in ["this is a test", "this is another, longer test"]]
    gen_b, ref_b = trainer.generate(model_inputs, batch_size=2, generate_ref_response=True, **generation_kwargs)
    gen_s, ref_s = zip(*(trainer.generate(i, generate_ref_response=True, **generation_kwargs) for i in model_inputs))
    gen_b, ref_b = tok.batch_decode(gen_b), tok.batch_decode(ref_b)
    gen_s, ref_s = tok.batch_decode([g.squeeze() for g in gen_s]), tok.batch_decode([g.squeeze() for g in ref_s])
    assert gen_s == gen_b and ref_s == ref_b
    assert gen_b != ref_b and gen_s != ref_s


def test_grad_accumulation(env):
    torch.manual_seed(0)
    gpt2_model = AutoModelForCausalLMWithValueHead.from_pretrained(env["path"], summary_dropout_prob=0.0)
    gpt2_model_clone = copy.deepcopy(gpt2_model)
    ppo_config = PPOConfig(batch_size=2, mini_batch_size=2, ppo_epochs=1, log_with=None)
    trainer = PPOTrainer(config=ppo_config, model=gpt2_model, ref_model=None, tokenizer=env["tok"],
                         dataset=_init_dummy_dataset(env))
    _one_step(trainer, reward=(1.0, 1.0))
    ppo_config.mini_batch_size = 1
    ppo_config.gradient_accumulation_steps = 2
    trainer = PPOTrainer(config=ppo_config, model=gpt2_model_clone, ref_model=None, tokenizer=env["tok"],
                         dataset=_init_dummy_dataset(env))
    _one_step(trainer, reward=(1.0, 1.0))
    assert not torch.equal(gpt2_model.v_head.summary.weight, AutoModelForCausalLMWithValueHead.from_pretrained(
        env["path"], summary_dropout_prob=0.0).v_head.summary.weight)  # it trained
    assert torch.allclose(gpt2_model_clone.v_head.summary.weight, gpt2_model.v_head.summary.weight, rtol=1e-3, atol=1e-3)


def test_batch_size_check():
    with pytest.raises(ValueError):
        PPOConfig(batch_size=2, mini_batch_size=2, gradient_accumulation_steps=2)
