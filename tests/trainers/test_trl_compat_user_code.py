"""The two classic ways people drove TRL 0.11's PPO, written with rlhfkit imports.

- A command-line training script: ``HfArgumentParser`` over a script dataclass and
  ``PPOConfig``; a dataset built with ``load_dataset`` / ``filter`` / ``map`` and a
  ``LengthSampler``; a list collator; ``set_seed``; a full or LoRA policy;
  ``generate(..., return_prompt=False, generate_ref_response=True)``; one reward per
  response; ``step`` and ``log_stats(..., columns_to_log=...)``.
- A notebook: one query at a time through ``generate`` with a sampled ``max_new_tokens``,
  ``step`` and ``log_stats``, a before/after table made with the models' own ``generate``,
  then ``save_pretrained``.

Everything is local: a tiny GPT-2 folder stands in for a hub model, a JSONL folder of
generated "reviews" for IMDb, and ``positivity`` (a word rule with the output format of a
``sentiment-analysis`` pipeline called with ``return_all_scores=True``) for the hub classifier.
"""

import json
import math
import random
from dataclasses import dataclass, field

import pytest
import torch
from datasets import load_dataset
from transformers import AutoTokenizer, HfArgumentParser

from rlhfkit import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer, set_seed
from rlhfkit.core import LengthSampler

CHEERFUL = ("moon", "song", "rock", "night")
SAMPLING = {"min_length": -1, "top_k": 0.0, "top_p": 1.0, "do_sample": True}


def positivity(texts, return_all_scores=True, function_to_apply="none", batch_size=16):
    """[[NEGATIVE, POSITIVE]] logit dicts per text, from how many cheerful words it holds."""
    texts = [texts] if isinstance(texts, str) else texts
    logits = [sum(t.lower().count(w) for w in CHEERFUL) - 1.0 for t in texts]
    return [[{"label": "NEGATIVE", "score": -x}, {"label": "POSITIVE", "score": x}] for x in logits]


@pytest.fixture
def reviews(tmp_path):
    """A ``load_dataset``-able folder: 8 reviews over 200 characters and 2 shorter ones."""
    from rlhfkit.testing import toy_corpus

    rng, sentences = random.Random(7), toy_corpus(300, seed=3)
    folder = tmp_path / "reviews"
    folder.mkdir()
    rows = [{"text": " ".join(rng.sample(sentences, 9 if i % 5 else 2)), "label": i % 2} for i in range(10)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sum(len(r["text"]) > 200 for r in rows) == 8
    return folder


def build_dataset(model_dir, data_dir, num_proc=None):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ds = load_dataset(str(data_dir), split="train").rename_columns({"text": "review"})
    ds = ds.filter(lambda row: len(row["review"]) > 200, num_proc=num_proc)
    prompt_length = LengthSampler(2, 8)

    def tokenize(row):
        row["input_ids"] = tokenizer.encode(row["review"])[: prompt_length()]
        row["query"] = tokenizer.decode(row["input_ids"])
        return row

    ds = ds.map(tokenize, num_proc=num_proc)
    ds.set_format(type="torch")
    return ds


def collator(rows):
    return {key: [row[key] for row in rows] for key in rows[0]}


def _logged(config):
    path = f"{config.project_kwargs['logging_dir']}/metrics.jsonl"
    return [json.loads(line) for line in open(path)]


@dataclass
class ScriptArguments:
    use_peft: bool = field(default=False, metadata={"help": "train a LoRA adapter instead of every weight"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator"})


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_command_line_script(tiny_dirs, reviews, tmp_path, use_peft):
    argv = ["--model_name", str(tiny_dirs["gpt2"]), "--query_dataset", str(reviews), "--reward_model",
            "sentiment-analysis:positivity-rule", "--batch_size", "4", "--mini_batch_size", "2", "--ppo_epochs", "2",
            "--log_with", "jsonl", "--learning_rate", "1e-3", "--use_peft", str(use_peft).lower(), "--lora_r", "4"]
    args, config = HfArgumentParser((ScriptArguments, PPOConfig)).parse_args_into_dataclasses(args=argv)
    assert (args.use_peft, args.lora_r, config.batch_size, config.ppo_epochs) == (use_peft, 4, 4, 2)
    assert config.model_name == str(tiny_dirs["gpt2"]) and config.learning_rate == 1e-3
    config.project_kwargs["logging_dir"] = str(tmp_path / "logs")  # dict fields are not command-line options
    dataset = build_dataset(config.model_name, config.query_dataset, config.dataset_num_proc)
    assert len(dataset) == 8 and all(2 <= len(ids) < 8 for ids in dataset["input_ids"])

    set_seed(config.seed)
    if use_peft:
        LoraConfig = pytest.importorskip("peft").LoraConfig

        lora = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, bias="none", task_type="CAUSAL_LM")
        model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name, peft_config=lora,
                                                                  device_map={"": "cpu"})
        ref_model = None
    else:
        model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
        ref_model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    tokenizer = AutoTokenizer.from_pretrained(config.model_name)
    tokenizer.pad_token_id = tokenizer.eos_token_id
    trainer = PPOTrainer(config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator)
    assert trainer.accelerator.num_processes == 1 and trainer.accelerator.state.deepspeed_plugin is None
    task, _ = config.reward_model.split(":")
    assert task == "sentiment-analysis"

    history = []
    for batch in trainer.dataloader:
        query_tensors = batch["input_ids"]
        responses, ref_responses = trainer.generate(query_tensors, return_prompt=False, generate_ref_response=True,
                                                    pad_token_id=tokenizer.eos_token_id, max_new_tokens=8,
                                                    **SAMPLING)
        assert len(responses) == len(ref_responses) == 4 and all(1 <= len(r) <= 8 for r in responses + ref_responses)
        batch["response"] = tokenizer.batch_decode(responses)
        batch["ref_response"] = tokenizer.batch_decode(ref_responses)
        scores = positivity([q + r for q, r in zip(batch["query"], batch["response"])], batch_size=16)
        rewards = [torch.tensor(s[1]["score"]) for s in scores]
        ref_scores = positivity([q + r for q, r in zip(batch["query"], batch["ref_response"])])
        batch["ref_rewards"] = [torch.tensor(s[1]["score"]) for s in ref_scores]
        stats = trainer.step(query_tensors, responses, rewards)
        trainer.log_stats(stats, batch, rewards, columns_to_log=["query", "response", "ref_response", "ref_rewards"])
        history.append((stats, float(torch.stack(rewards).mean())))

    assert len(history) == 2  # 8 long reviews in batches of 4
    assert history[0][0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at first
    assert all(math.isfinite(s[k]) for s, _ in history for k in ("objective/kl", "ppo/loss/total", "ppo/mean_scores"))
    logged = _logged(config)
    assert [row["env/reward_mean"] for row in logged] == pytest.approx([mean for _, mean in history], abs=1e-6)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    if use_peft:
        assert changed and all("lora_" in n or n.startswith("v_head.") for n in changed)
    else:
        assert changed == set(start)


def test_notebook(tiny_dirs, reviews, tmp_path):
    config = PPOConfig(model_name=str(tiny_dirs["gpt2"]), learning_rate=1.41e-5, batch_size=4, mini_batch_size=2,
                       log_with="jsonl", project_kwargs={"logging_dir": str(tmp_path / "logs")})
    dataset = build_dataset(config.model_name, reviews)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
    ref_model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    ref_original = {k: v.clone() for k, v in ref_model.state_dict().items()}
    tokenizer = AutoTokenizer.from_pretrained(config.model_name)
    tokenizer.pad_token = tokenizer.eos_token
    trainer = PPOTrainer(config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator)
    assert positivity("what a song under the moon!!", return_all_scores=True)[0][1]["score"] == 1.0

    response_length = LengthSampler(4, 16)
    kwargs = dict(SAMPLING, pad_token_id=tokenizer.eos_token_id)
    steps = 0
    for batch in trainer.dataloader:
        responses = []
        for query in batch["input_ids"]:
            kwargs["max_new_tokens"] = limit = response_length()
            full = trainer.generate(query, **kwargs).squeeze()
            assert torch.equal(full[: len(query)], query) and 1 <= len(full) - len(query) <= limit
            responses.append(full[len(query):])
        batch["response"] = [tokenizer.decode(r.squeeze()) for r in responses]
        outputs = positivity([q + r for q, r in zip(batch["query"], batch["response"])])
        rewards = [torch.tensor(item["score"]) for out in outputs for item in out if item["label"] == "POSITIVE"]
        stats = trainer.step(batch["input_ids"], responses, rewards)
        trainer.log_stats(stats, batch, rewards)
        steps += 1
    assert steps == 2 and len(_logged(config)) == 2

    dataset.set_format("pandas")
    sample = dataset[:].sample(4, random_state=0)
    table = {"query": sample["query"].tolist(), "before": [], "after": []}
    kwargs.pop("max_new_tokens")
    for ids in sample["input_ids"].tolist():
        query, limit = torch.tensor(ids), response_length()
        for column, lm in (("before", ref_model), ("after", model)):
            full = lm.generate(query.unsqueeze(0), max_new_tokens=limit, **kwargs).squeeze()
            assert torch.equal(full[: len(query)], query) and len(full) - len(query) <= limit
            table[column].append(tokenizer.decode(full[len(query):]))
    for column in ("before", "after"):
        table[f"rewards ({column})"] = [out[1]["score"] for out in positivity(
            [q + r for q, r in zip(table["query"], table[column])])]
    import pandas as pd

    assert pd.DataFrame(table).shape == (4, 5)

    out = tmp_path / "gpt2-reviews-positive"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    saved = AutoModelForCausalLMWithValueHead.from_pretrained(out).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())  # the trained policy, head included
    assert any(not torch.equal(saved[k], original[k]) for k in original if not k.startswith("v_head."))
    assert all(torch.equal(v, ref_original[k]) for k, v in ref_model.state_dict().items())
    assert AutoTokenizer.from_pretrained(out).encode("the moon") == tokenizer.encode("the moon")
