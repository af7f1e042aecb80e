'''Classic TRL 0.11 user code, run unchanged except for the import lines.

``EXAMPLE_SCRIPT`` is TRL 0.11.4's ``examples/scripts/ppo.py`` and ``NOTEBOOK_LOOP`` the
training loop of its ``gpt2-sentiment.ipynb`` notebook. Only the lines marked ``# CHANGED``
differ: the ``from trl ...`` imports, and the hub sentiment pipeline (``lvwerra/distilbert-imdb``
through ``pipeline(...)``, whose ``return_all_scores`` Transformers 5 removed) becomes
``sentiment_pipe``, a local rule with the pipeline's output format. The model and the
"imdb" dataset are local folders passed through the config, as a user would.
'''

import json
import random
import runpy
import sys

import pytest
import torch

EXAMPLE_SCRIPT = r"""
from dataclasses import dataclass, field
from typing import Optional

import torch
from accelerate import Accelerator
from datasets import load_dataset
from peft import LoraConfig
from tqdm import tqdm
from transformers import AutoTokenizer, HfArgumentParser

from rlhfkit import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead, PPOConfig, PPOTrainer, set_seed  # CHANGED
from rlhfkit.core import LengthSampler  # CHANGED
from transformers.utils import is_torch_npu_available as is_npu_available, is_torch_xpu_available as is_xpu_available  # CHANGED


tqdm.pandas()


@dataclass
class ScriptArguments:
    use_seq2seq: bool = field(default=False, metadata={"help": "whether to use seq2seq"})
    trust_remote_code: bool = field(default=False, metadata={"help": "Enable `trust_remote_code`"})

    # LoraConfig
    use_peft: bool = field(default=False, metadata={"help": "whether to use peft"})
    lora_alpha: Optional[float] = field(default=16, metadata={"help": "the lora alpha parameter"})
    lora_r: Optional[int] = field(default=16, metadata={"help": "the lora r parameter"})


parser = HfArgumentParser((ScriptArguments, PPOConfig))
args, ppo_config = parser.parse_args_into_dataclasses()

sent_kwargs = {"return_all_scores": True, "function_to_apply": "none", "batch_size": 16}

trl_model_class = AutoModelForCausalLMWithValueHead if not args.use_seq2seq else AutoModelForSeq2SeqLMWithValueHead


def build_dataset(config, query_dataset, input_min_text_length=2, input_max_text_length=8):
    tokenizer = AutoTokenizer.from_pretrained(config.model_name)
    tokenizer.pad_token = tokenizer.eos_token
    # load imdb with datasets
    ds = load_dataset(query_dataset, split="train")
    ds = ds.rename_columns({"text": "review"})
    ds = ds.filter(lambda x: len(x["review"]) > 200, num_proc=config.dataset_num_proc)  # CHANGED: TRL read args.dataset_num_proc, a field its ScriptArguments lacks

    input_size = LengthSampler(input_min_text_length, input_max_text_length)

    def tokenize(sample):
        sample["input_ids"] = tokenizer.encode(sample["review"])[: input_size()]
        sample["query"] = tokenizer.decode(sample["input_ids"])
        return sample

    ds = ds.map(tokenize, batched=False, num_proc=config.dataset_num_proc)  # CHANGED: as above
    ds.set_format(type="torch")
    return ds


dataset = build_dataset(ppo_config, ppo_config.query_dataset)


def collator(data):
    return {key: [d[key] for d in data] for key in data[0]}


# set seed before initializing value head for deterministic eval
set_seed(ppo_config.seed)

# Now let's build the model, the reference model, and the tokenizer.
if not args.use_peft:
    ref_model = trl_model_class.from_pretrained(ppo_config.model_name, trust_remote_code=args.trust_remote_code)
    device_map = None
    peft_config = None
else:
    peft_config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        bias="none",
        task_type="CAUSAL_LM",
    )
    ref_model = None
    # Copy the model to each device
    device_map = {"": Accelerator().local_process_index}

model = trl_model_class.from_pretrained(
    ppo_config.model_name,
    trust_remote_code=args.trust_remote_code,
    device_map=device_map,
    peft_config=peft_config,
)


tokenizer = AutoTokenizer.from_pretrained(ppo_config.model_name)

# Some tokenizers like GPT-2's don't have a padding token by default, so we set one here.
tokenizer.pad_token_id = tokenizer.eos_token_id

# We then build the PPOTrainer, passing the model, the reference model, the tokenizer
ppo_trainer = PPOTrainer(ppo_config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator)

device = ppo_trainer.accelerator.device
if ppo_trainer.accelerator.num_processes == 1:
    if is_xpu_available():
        device = "xpu:0"
    elif is_npu_available():
        device = "npu:0"
    else:
        device = 0 if torch.cuda.is_available() else "cpu"  # to avoid a `pipeline` bug
ds_plugin = ppo_trainer.accelerator.state.deepspeed_plugin
task, model_name = ppo_config.reward_model.split(":")
sentiment_pipe = SENTIMENT_PIPE  # CHANGED: was pipeline(task, model=model_name, device=device) (+ DeepSpeed branch)

generation_kwargs = {
    "min_length": -1,
    "top_k": 0.0,
    "top_p": 1.0,
    "do_sample": True,
    "pad_token_id": tokenizer.eos_token_id,
    "max_new_tokens": 32,
}

for _epoch, batch in tqdm(enumerate(ppo_trainer.dataloader)):
    query_tensors = batch["input_ids"]

    # Get response from gpt2
    response_tensors, ref_response_tensors = ppo_trainer.generate(
        query_tensors, return_prompt=False, generate_ref_response=True, **generation_kwargs
    )
    batch["response"] = tokenizer.batch_decode(response_tensors)
    batch["ref_response"] = tokenizer.batch_decode(ref_response_tensors)

    # Compute sentiment score
    texts = [q + r for q, r in zip(batch["query"], batch["response"])]
    pipe_outputs = sentiment_pipe(texts, **sent_kwargs)
    rewards = [torch.tensor(output[1]["score"]) for output in pipe_outputs]
    ref_texts = [q + r for q, r in zip(batch["query"], batch["ref_response"])]
    ref_pipe_outputs = sentiment_pipe(ref_texts, **sent_kwargs)
    ref_rewards = [torch.tensor(output[1]["score"]) for output in ref_pipe_outputs]
    batch["ref_rewards"] = ref_rewards

    # Run PPO step
    stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
    ppo_trainer.log_stats(stats, batch, rewards, columns_to_log=["query", "response", "ref_response", "ref_rewards"])
    RESULTS.append(stats)  # CHANGED: the test reads the stats
"""

NOTEBOOK_LOOP = r"""
import torch
from tqdm import tqdm
import pandas as pd

tqdm.pandas()

from transformers import AutoTokenizer
from datasets import load_dataset

from rlhfkit import PPOTrainer, PPOConfig, AutoModelForCausalLMWithValueHead  # CHANGED
from rlhfkit.core import LengthSampler  # CHANGED

config = PPOConfig(
    model_name=MODEL_DIR,  # CHANGED: was "lvwerra/gpt2-imdb"
    learning_rate=1.41e-5,
    batch_size=4,  # CHANGED: small for CPU (was the default 128)
    mini_batch_size=2,  # CHANGED: as above
)

sent_kwargs = {"return_all_scores": True, "function_to_apply": "none", "batch_size": 16}


def build_dataset(config, dataset_name=DATASET_DIR, input_min_text_length=2, input_max_text_length=8):  # CHANGED: was "imdb"
    tokenizer = AutoTokenizer.from_pretrained(config.model_name)
    tokenizer.pad_token = tokenizer.eos_token
    # load imdb with datasets
    ds = load_dataset(dataset_name, split="train")
    ds = ds.rename_columns({"text": "review"})
    ds = ds.filter(lambda x: len(x["review"]) > 200, batched=False)

    input_size = LengthSampler(input_min_text_length, input_max_text_length)

    def tokenize(sample):
        sample["input_ids"] = tokenizer.encode(sample["review"])[: input_size()]
        sample["query"] = tokenizer.decode(sample["input_ids"])
        return sample

    ds = ds.map(tokenize, batched=False)
    ds.set_format(type="torch")
    return ds


dataset = build_dataset(config)


def collator(data):
    return dict((key, [d[key] for d in data]) for key in data[0])


model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
ref_model = AutoModelForCausalLMWithValueHead.from_pretrained(config.model_name)
tokenizer = AutoTokenizer.from_pretrained(config.model_name)

tokenizer.pad_token = tokenizer.eos_token

ppo_trainer = PPOTrainer(config, model, ref_model, tokenizer, dataset=dataset, data_collator=collator)

device = ppo_trainer.accelerator.device
if ppo_trainer.accelerator.num_processes == 1:
    device = 0 if torch.cuda.is_available() else "cpu"  # to avoid a `pipeline` bug
sentiment_pipe = SENTIMENT_PIPE  # CHANGED: was pipeline("sentiment-analysis", model="lvwerra/distilbert-imdb", device=device)

text = "this movie was really bad!!"
sentiment_pipe(text, **sent_kwargs)

gen_kwargs = {"min_length": -1, "top_k": 0.0, "top_p": 1.0, "do_sample": True, "pad_token_id": tokenizer.eos_token_id}

output_min_length = 4
output_max_length = 16
output_length_sampler = LengthSampler(output_min_length, output_max_length)


generation_kwargs = {
    "min_length": -1,
    "top_k": 0.0,
    "top_p": 1.0,
    "do_sample": True,
    "pad_token_id": tokenizer.eos_token_id,
}


for epoch, batch in enumerate(tqdm(ppo_trainer.dataloader)):
    query_tensors = batch["input_ids"]

    #### Get response from gpt2
    response_tensors = []
    for query in query_tensors:
        gen_len = output_length_sampler()
        generation_kwargs["max_new_tokens"] = gen_len
        query_response = ppo_trainer.generate(query, **generation_kwargs).squeeze()
        response_len = len(query_response) - len(query)
        response_tensors.append(query_response[-response_len:])
    batch["response"] = [tokenizer.decode(r.squeeze()) for r in response_tensors]

    #### Compute sentiment score
    texts = [q + r for q, r in zip(batch["query"], batch["response"])]
    pipe_outputs = sentiment_pipe(texts, **sent_kwargs)
    positive_scores = [
        item["score"]
        for output in pipe_outputs
        for item in output
        if item["label"] == "POSITIVE"
    ]
    rewards = [torch.tensor(score) for score in positive_scores]

    #### Run PPO step
    stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
    ppo_trainer.log_stats(stats, batch, rewards)
    RESULTS.append(stats)  # CHANGED: the test reads the stats

#### get a batch from the dataset
bs = 4  # CHANGED: was 16
game_data = dict()
dataset.set_format("pandas")
df_batch = dataset[:].sample(bs)
game_data["query"] = df_batch["query"].tolist()
query_tensors = df_batch["input_ids"].tolist()

response_tensors_ref, response_tensors = [], []

#### get response from gpt2 and gpt2_ref
for i in range(bs):
    query = torch.tensor(query_tensors[i]).to(device)

    gen_len = output_length_sampler()
    query_response = ref_model.generate(
        query.unsqueeze(0), max_new_tokens=gen_len, **gen_kwargs
    ).squeeze()
    response_len = len(query_response) - len(query)
    response_tensors_ref.append(query_response[-response_len:])

    query_response = model.generate(
        query.unsqueeze(0), max_new_tokens=gen_len, **gen_kwargs
    ).squeeze()
    response_len = len(query_response) - len(query)
    response_tensors.append(query_response[-response_len:])

#### decode responses
game_data["response (before)"] = [
    tokenizer.decode(response_tensors_ref[i]) for i in range(bs)
]
game_data["response (after)"] = [tokenizer.decode(response_tensors[i]) for i in range(bs)]

#### sentiment analysis of query/response pairs before/after
texts = [q + r for q, r in zip(game_data["query"], game_data["response (before)"])]
pipe_outputs = sentiment_pipe(texts, **sent_kwargs)
positive_scores = [
    item["score"]
    for output in pipe_outputs
    for item in output
    if item["label"] == "POSITIVE"
]
game_data["rewards (before)"] = positive_scores

texts = [q + r for q, r in zip(game_data["query"], game_data["response (after)"])]
pipe_outputs = sentiment_pipe(texts, **sent_kwargs)
positive_scores = [
    item["score"]
    for output in pipe_outputs
    for item in output
    if item["label"] == "POSITIVE"
]
game_data["rewards (after)"] = positive_scores

# store results in a dataframe
df_results = pd.DataFrame(game_data)
model.save_pretrained(SAVE_DIR)  # CHANGED: was "gpt2-imdb-pos-v2", push_to_hub=True
tokenizer.save_pretrained(SAVE_DIR)  # CHANGED: as above
"""

GOOD_WORDS = ("rock", "song", "moon", "night")


def sentiment_pipe(texts, return_all_scores=True, function_to_apply="none", batch_size=16):
    """The hub sentiment pipeline's output format ([NEGATIVE, POSITIVE] logits per text) from a rule."""
    texts = [texts] if isinstance(texts, str) else texts
    out = []
    for text in texts:
        positive = sum(text.lower().count(w) for w in GOOD_WORDS) - 0.5
        out.append([{"label": "NEGATIVE", "score": -positive}, {"label": "POSITIVE", "score": positive}])
    return out


@pytest.fixture
def imdb_dir(tmp_path):
    from rlhfkit.testing import toy_corpus

    rng, sentences = random.Random(0), toy_corpus(400)
    path = tmp_path / "imdb"
    path.mkdir()
    with open(path / "train.jsonl", "w") as fh:
        for i in range(10):
            text = " ".join(rng.sample(sentences, 8 if i < 8 else 2))  # the last two are shorter than 200 chars
            fh.write(json.dumps({"text": text, "label": i % 2}) + "\n")
    return path


def _run(source, tmp_path, argv=(), **globals_):
    script = tmp_path / "script.py"
    script.write_text(source)
    results = []
    old_argv = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), init_globals={"SENTIMENT_PIPE": sentiment_pipe, "RESULTS": results, **globals_},
                       run_name="__main__")
    finally:
        sys.argv = old_argv
    return results


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("use_peft", [False, pytest.param(True, marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the script maps the PEFT model to device index 0: a GPU"))])
def test_trl_example_script_runs_unchanged(tiny_dirs, imdb_dir, tmp_path, use_peft):
    argv = ["--model_name", str(tiny_dirs["gpt2"]), "--query_dataset", str(imdb_dir),
            "--reward_model", "sentiment-analysis:local-rule", "--batch_size", "4", "--mini_batch_size", "2",
            "--ppo_epochs", "2", *(["--use_peft", "true"] if use_peft else [])]
    results = _run(EXAMPLE_SCRIPT, tmp_path, argv)
    assert len(results) == 2  # 8 reviews over 200 characters, batches of 4
    for stats in results:
        assert all(torch.isfinite(torch.as_tensor(stats[k])) for k in ("objective/kl", "ppo/loss/total", "ppo/mean_scores"))
    assert results[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference before any update


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_trl_notebook_loop_runs_unchanged(tiny_dirs, imdb_dir, tmp_path):
    from rlhfkit import AutoModelForCausalLMWithValueHead

    save_dir = tmp_path / "gpt2-imdb-pos-v2"
    results = _run(NOTEBOOK_LOOP, tmp_path, MODEL_DIR=str(tiny_dirs["gpt2"]), DATASET_DIR=str(imdb_dir),
                   SAVE_DIR=str(save_dir))
    assert len(results) == 2 and all("ppo/loss/total" in s for s in results)
    reloaded = AutoModelForCausalLMWithValueHead.from_pretrained(save_dir)
    original = AutoModelForCausalLMWithValueHead.from_pretrained(tiny_dirs["gpt2"])
    changed = [not torch.equal(a, b) for a, b in zip(reloaded.pretrained_model.parameters(),
                                                       original.pretrained_model.parameters())]
    assert any(changed)  # the saved policy is the trained one
