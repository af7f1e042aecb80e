"""The classic TRL quickstart and notebook loop, unchanged but for the import."""

import json

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer


def test_quickstart_snippet(tiny_dirs, tmp_path):
    path = tiny_dirs["gpt2"]
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    model_ref = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    ppo_trainer = PPOTrainer(PPOConfig(batch_size=1, mini_batch_size=1), model, model_ref, tokenizer)
    query_tensor = tokenizer.encode("This morning I went to the ", return_tensors="pt")
    response_tensor = ppo_trainer.generate([q for q in query_tensor], return_prompt=False,
                                           min_length=-1, top_k=0.0, top_p=1.0, do_sample=True,
                                           pad_token_id=tokenizer.eos_token_id, max_new_tokens=20)
    train_stats = ppo_trainer.step([query_tensor[0]], [response_tensor[0]], [torch.tensor(1.0)])
    assert 1 <= len(response_tensor[0]) <= 20
    for key in ("objective/kl", "objective/entropy", "ppo/loss/policy", "ppo/loss/value", "ppo/policy/clipfrac",
                "ppo/policy/approxkl", "ppo/returns/mean", "ppo/val/vpred", "ppo/mean_scores", "time/ppo/total"):
        assert key in train_stats
    scalars = {k: v for k, v in train_stats.items() if isinstance(v, float)}
    assert all(v == v for v in scalars.values()), "no NaN in the stats of a batch of one"
    out = tmp_path / "out"
    model.save_pretrained(out)
    plain = AutoModelForCausalLM.from_pretrained(out).eval()  # the trained policy, as a Transformers checkpoint
    ids = torch.cat([query_tensor[0], response_tensor[0]]).unsqueeze(0)
    torch.testing.assert_close(plain(ids).logits, model.eval()(input_ids=ids)[0], rtol=1e-5, atol=1e-5)
    start = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in plain.state_dict().items())


def test_notebook_loop_with_dataset_collator_and_log_stats(tiny_dirs, tmp_path):
    path = tiny_dirs["llama"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    texts = ["the cat sings", "a dog runs by the", "we walk", "my friend reads", "the band plays all",
             "they dance", "a robot waits", "the river shines under"]
    ds = Dataset.from_dict({"review": texts})
    ds = ds.map(lambda x: {"input_ids": tokenizer.encode(x["review"]), "query": x["review"]})
    ds.set_format(type="torch")

    def collator(data):
        return dict((key, [d[key] for d in data]) for key in data[0])

    config = PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-4, log_with="jsonl",
                       project_kwargs={"logging_dir": str(tmp_path / "logs")})
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    ppo_trainer = PPOTrainer(config, model, None, tokenizer, dataset=ds, data_collator=collator)
    gen_kwargs = {"min_length": -1, "top_k": 0.0, "top_p": 1.0, "do_sample": True,
                  "pad_token_id": tokenizer.eos_token_id, "max_new_tokens": 6}
    steps = 0
    for batch in ppo_trainer.dataloader:
        query_tensors = batch["input_ids"]
        response_tensors = ppo_trainer.generate(query_tensors, return_prompt=False, **gen_kwargs)
        batch["response"] = tokenizer.batch_decode(response_tensors)
        rewards = [torch.tensor(float(len(r))) for r in batch["response"]]
        stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
        ppo_trainer.log_stats(stats, batch, rewards)
        steps += 1
    assert steps == 2  # 8 rows, batch 4, last partial batch dropped
    lines = (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    row = json.loads(lines[0])
    assert "env/reward_mean" in row and "ppo/loss/policy" in row


def test_single_query_generate_returns_2d(tiny_dirs):
    path = tiny_dirs["gpt2"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    trainer = PPOTrainer(PPOConfig(batch_size=1, mini_batch_size=1), model, None, tokenizer)
    q = torch.tensor(tokenizer.encode("a dog"))
    out = trainer.generate(q, max_new_tokens=4, min_new_tokens=4, do_sample=True, pad_token_id=0)
    assert out.dim() == 2 and out.shape[1] == len(q) + 4 and torch.equal(out[0, : len(q)], q)
    resp, ref = trainer.generate([q, q], return_prompt=False, generate_ref_response=True,
                                 max_new_tokens=3, do_sample=False)
    assert len(resp) == len(ref) == 2
    assert torch.equal(resp[0], ref[0])  # greedy, and the policy has not moved yet
