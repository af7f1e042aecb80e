"""The vLLM rollout glue against a fake engine (vLLM is not installed here; no GPU).

The fake mimics the surfaces rlhfkit.rollout.vllm uses: ``LLM.generate(prompts, params,
use_tqdm=..., lora_request=...)`` returning RequestOutput-like objects, ``apply_model`` (V1)
or ``llm_engine.model_executor.driver_worker.model_runner.model`` (V0) with ``load_weights``,
and ``reset_prefix_cache``. Sampling itself is done by the tiny HF model, so a PPOTrainer
driven by the fake really trains on what the "engine" sampled.
"""

import importlib.util
import time
from types import SimpleNamespace

import pytest
import torch

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from rlhfkit.rollout import vllm as rv


class FakeParams:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class FakeLoRARequest:
    def __init__(self, name, int_id, path):
        self.lora_name, self.lora_int_id, self.lora_path = name, int_id, path


class FakeModel:
    """What lives inside the engine: load_weights(iterable of (name, tensor))."""

    def __init__(self, delay=0.0):
        self.loaded, self.delay = [], delay

    def load_weights(self, weights):
        time.sleep(self.delay)
        self.loaded.append({name: t.clone() for name, t in weights})


class FakeLLM:
    def __init__(self, hf_model=None, v1=True, delay=0.0, scripted=None):
        self.hf_model, self.scripted, self.calls, self.resets = hf_model, scripted, [], 0
        self.inner = FakeModel(delay)
        if v1:
            self.apply_model = lambda fn: [fn(self.inner)]
        else:
            self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(
                driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=self.inner))))

    def reset_prefix_cache(self):
        self.resets += 1

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, params, lora_request))
        outs = []
        for p in prompts:
            ids = p["prompt_token_ids"]
            if self.scripted is not None:
                toks = list(self.scripted)
            else:  # sample with the HF model, as an engine holding the same weights would
                x = torch.tensor([ids])
                g = self.hf_model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=True, top_k=0,
                                           max_new_tokens=params.max_tokens, min_new_tokens=params.min_tokens,
                                           pad_token_id=0)
                toks = g[0, len(ids):].tolist()
            lps = [{t: SimpleNamespace(logprob=-0.5 - i)} for i, t in enumerate(toks)]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=toks, logprobs=lps)]))
        return outs


def engine(llm, **kw):
    return rv.VLLMRollout(llm, sampling_params_cls=FakeParams, lora_request_cls=FakeLoRARequest, **kw)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_names_the_fix():
    with pytest.raises(ImportError, match="pip install vllm"):
        rv.VLLMRollout.from_pretrained("some/model")
    with pytest.raises(ImportError, match="Hugging Face generate"):
        rv.VLLMRollout(FakeLLM(scripted=[1]))  # no classes given: vLLM's own are needed


def test_generate_maps_settings_and_returns_ids_and_sampled_logprobs():
    llm = FakeLLM(scripted=[7, 8, 2])
    out = engine(llm).generate([torch.tensor([5, 6]), [9]], rv.SamplingSettings(max_new_tokens=3, min_new_tokens=1,
                                                                                 top_p=0.9, stop_token_ids=(2,)))
    assert [r.tolist() for r in out.response_ids] == [[7, 8, 2], [7, 8, 2]]
    torch.testing.assert_close(out.logprobs[0], torch.tensor([-0.5, -1.5, -2.5]))
    prompts, params, lora = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [5, 6]}, {"prompt_token_ids": [9]}] and lora is None
    assert (params.n, params.max_tokens, params.min_tokens, params.top_p, params.top_k, params.logprobs,
            params.stop_token_ids) == (1, 3, 1, 0.9, -1, 0, [2])


def test_settings_from_generation_kwargs_refuse_what_they_cannot_honour():
    s = rv.SamplingSettings.from_generation_kwargs(dict(max_new_tokens=5, min_new_tokens=5, top_k=0, top_p=1.0,
                                                        do_sample=True, pad_token_id=0), eos_token_id=2)
    assert (s.max_new_tokens, s.min_new_tokens, s.top_k, s.stop_token_ids) == (5, 5, 0, (2,))
    s = rv.SamplingSettings.from_generation_kwargs(dict(repetition_penalty=1.2, min_p=0.05))
    assert (s.repetition_penalty, s.min_p) == (1.2, 0.05)
    params = s.to_vllm(FakeParams)
    assert (params.repetition_penalty, params.min_p) == (1.2, 0.05)
    with pytest.raises(ValueError, match=r"\['num_beams'\]"):
        rv.SamplingSettings.from_generation_kwargs(dict(num_beams=2))
    with pytest.raises(ValueError, match="repetition_penalty"):
        rv.SamplingSettings(repetition_penalty=0)
    with pytest.raises(ValueError, match="greedy"):
        rv.SamplingSettings.from_generation_kwargs(dict(do_sample=False))
    with pytest.raises(ValueError, match="min_new_tokens"):
        rv.SamplingSettings(max_new_tokens=2, min_new_tokens=3)
    with pytest.raises(ValueError, match="temperature"):
        rv.SamplingSettings(temperature=0)
    with pytest.raises(ValueError, match="at least one token"):
        engine(FakeLLM(scripted=[1])).generate([[]], rv.SamplingSettings())


@pytest.mark.parametrize("v1", [True, False])
def test_full_weight_sync_loads_transformers_names_and_resets_prefix_cache(tiny_dirs, v1):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    llm = FakeLLM(v1=v1)
    e = engine(llm)
    e.sync_weights(model)
    loaded = llm.inner.loaded[-1]
    expected = model.pretrained_model.state_dict()
    assert loaded.keys() == expected.keys() and not any(k.startswith("v_head") for k in loaded)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert llm.resets == 1 and e.syncs == 1


def test_sync_timeout_raises_instead_of_hanging(tiny_dirs):
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    e = engine(FakeLLM(delay=2.0), sync_timeout_s=0.2)
    t = time.perf_counter()
    with pytest.raises(TimeoutError, match="sync_timeout_s"):
        e.sync_weights(model)
    assert time.perf_counter() - t < 1.5
    with pytest.raises(ValueError, match="sync_timeout_s"):
        engine(FakeLLM(), sync_timeout_s=0)


def test_engine_without_a_weight_loader_is_a_clear_error(tiny_dirs):
    llm = FakeLLM(v1=False)
    llm.llm_engine = SimpleNamespace()
    with pytest.raises(RuntimeError, match="not supported for weight sync"):
        engine(llm).sync_weights(AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"]))


def test_lora_policy_ships_a_fresh_adapter_each_sync(tiny_dirs):
    peft = pytest.importorskip("peft")
    model = AutoModelForCausalLMWithValueHead.from_pretrained(
        tiny_dirs["gpt2"], peft_config=peft.LoraConfig(r=4, target_modules=["c_attn"], task_type="CAUSAL_LM"))
    llm = FakeLLM(scripted=[3])
    e = engine(llm)
    e.sync_weights(model)
    first = e.lora_request
    assert (first.lora_int_id, llm.inner.loaded) == (1, [])  # base weights never pushed
    import os
    assert os.path.exists(os.path.join(first.lora_path, "adapter_config.json"))
    e.sync_weights(model)
    assert e.lora_request.lora_int_id == 2 and e.lora_request.lora_path != first.lora_path
    e.generate([[5]], rv.SamplingSettings(max_new_tokens=1))
    assert llm.calls[-1][2] is e.lora_request


def test_ppo_trainer_samples_with_the_engine_and_syncs_after_every_step(tiny_dirs, tokenizer):
    torch.manual_seed(0)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    llm = FakeLLM(hf_model=model)
    cfg = PPOConfig(batch_size=2, mini_batch_size=1, ppo_epochs=1, learning_rate=1e-3)
    trainer = PPOTrainer(cfg, model, None, tokenizer, rollout_engine=engine(llm))
    assert len(llm.inner.loaded) == 1  # synced once at construction
    queries = [torch.tensor([5, 6, 7]), torch.tensor([8, 9])]
    responses = trainer.generate(queries, return_prompt=False, max_new_tokens=4, min_new_tokens=4, do_sample=True,
                                 top_k=0, top_p=1.0)
    assert len(llm.calls) == 1 and [len(r) for r in responses] == [4, 4]
    stats = trainer.step(queries, responses, [torch.tensor(1.0), torch.tensor(-1.0)])
    assert "time/ppo/weight_sync" in stats and len(llm.inner.loaded) == 2
    pushed = llm.inner.loaded[-1]
    now = model.pretrained_model.state_dict()
    assert all(torch.equal(pushed[k], now[k]) for k in now)  # the engine holds the updated policy
    assert not all(torch.equal(llm.inner.loaded[0][k], now[k]) for k in now)
    with_prompt = trainer.generate(queries[0], max_new_tokens=2, min_new_tokens=2)
    assert with_prompt.shape == (1, 5) and with_prompt[0, :3].tolist() == [5, 6, 7]
