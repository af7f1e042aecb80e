"""Tiny offline models for tests, examples and machines without a GPU or a model hub.

Everything here is built locally: a byte-level BPE tokenizer trained on a small
generated corpus, and randomly initialised causal LMs (GPT-2, Llama or Qwen2 shape) or
sequence-classification reward models (``num_labels=1``). Nothing is downloaded.

    >>> from rlhfkit.testing import tiny_tokenizer, tiny_causal_lm
    >>> tok = tiny_tokenizer()
    >>> model = tiny_causal_lm("gpt2", tok)

``rlhfkit tiny-model --arch llama --output_dir ./tiny`` writes the same to a folder that
``AutoModelForCausalLM.from_pretrained`` (and ``AutoTokenizer``) load.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

ARCHS = ("gpt2", "llama", "qwen2")
SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "we", "they", "the band", "a robot", "the river"]
_VERBS = ["sings", "runs", "walks", "writes", "plays", "sleeps", "dances", "reads", "waits", "shines"]
_ENDS = ["all night", "by the sea", "in the morning", "with joy", "again and again", "under the moon",
         "for a while", "at the station", "like a rock song", "halfway there"]


def toy_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Short generated sentences (no copyrighted text) to train the tiny tokenizer on."""
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_ENDS)}." for _ in range(n)]


def tiny_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None, individual_digits: bool = False,
                   merge_across_words: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer locally (a few hundred milliseconds).

    It has ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` and ``<|unk|>`` tokens, pads on the
    right like GPT-2, and carries a minimal chat template. ``individual_digits``: every digit is
    a token of its own (numbers are never merged), which makes arithmetic text easier to copy;
    ``merge_across_words``: merges may span spaces and punctuation, so a phrase the corpus
    repeats (a fixed markup) becomes a few tokens.
    """
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=not merge_across_words)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) \
        if individual_digits else byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or toy_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.padding_side = "right"
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return fast


def tiny_config(arch: str = "gpt2", tokenizer=None, vocab_size: int | None = None, hidden_size: int = 64,
                num_layers: int = 2, num_heads: int = 4, max_positions: int = 256, **overrides):
    """A small ``GPT2Config``, ``LlamaConfig`` or ``Qwen2Config`` (dropout off so tests are deterministic)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    vocab = vocab_size or (len(tokenizer) if tokenizer is not None else 256)
    ids = {}
    if tokenizer is not None:
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    if arch == "gpt2":
        cfg = dict(vocab_size=vocab, n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                   n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
        cfg.update(overrides)
        return GPT2Config(**cfg)
    cfg = dict(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
               num_hidden_layers=num_layers, num_attention_heads=num_heads,
               num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=max_positions,
               tie_word_embeddings=False, **ids)
    cfg.update(overrides)
    return LlamaConfig(**cfg) if arch == "llama" else Qwen2Config(**cfg)


def tiny_causal_lm(arch: str = "gpt2", tokenizer=None, seed: int = 0, **config_kwargs):
    """A randomly initialised ``AutoModelForCausalLM`` of the given shape."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, **config_kwargs))


def tiny_t5(tokenizer, seed: int = 0, d_ff: int = 64):
    """A randomly initialised two-layer ``T5ForConditionalGeneration`` (d_model 32, dropout 0) for ``tokenizer``."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=d_ff, d_kv=8, num_layers=2, num_heads=4, dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id))


def tiny_reward_model(arch: str = "gpt2", tokenizer=None, seed: int = 0, **config_kwargs):
    """A randomly initialised ``AutoModelForSequenceClassification`` with ``num_labels=1``."""
    torch.manual_seed(seed)
    config = tiny_config(arch, tokenizer, num_labels=1, **config_kwargs)
    return AutoModelForSequenceClassification.from_config(config)


def save_tiny(output_dir: str | Path, arch: str = "gpt2", kind: str = "causal-lm", seed: int = 0,
              **config_kwargs) -> Path:
    """Write a tiny tokenizer and model to ``output_dir``; returns the path."""
    if kind not in ("causal-lm", "reward"):
        raise ValueError(f"kind must be 'causal-lm' or 'reward', got {kind!r}")
    out = Path(output_dir)
    tok = tiny_tokenizer()
    build = tiny_causal_lm if kind == "causal-lm" else tiny_reward_model
    build(arch, tok, seed=seed, **config_kwargs).save_pretrained(out)
    tok.save_pretrained(out)
    return out


ROCK_WORDS = ("rock", "song", "night", "moon")
PLAIN_WORDS = ("waits", "sleeps", "reads", "walks")


def hidden_rule_preferences(n: int, seed: int = 0) -> list[dict]:
    """Synthetic preference pairs with a hidden rule: the chosen text has 1-3 "rock song" words
    (``ROCK_WORDS``), the rejected one none. Reward models and DPO must discover the rule."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(1, 3)
        good = rng.sample(ROCK_WORDS, k) + rng.sample(PLAIN_WORDS, 3 - k)
        rng.shuffle(good)
        rows.append({"prompt": f"the band {i % 5} ", "chosen": " ".join(good),
                     "rejected": " ".join(rng.sample(PLAIN_WORDS, 3))})
    return rows
