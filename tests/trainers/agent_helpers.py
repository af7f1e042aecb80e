"""A tiny tool-calling model for the multi-turn GRPO/RLOO tests: a calculator task, its corpus, brief pre-training.

The task: a user asks "23+58="; the right final answer is "81". The model can answer directly
(a tiny model cannot add) or call the calculator and copy its result:

    <|user|>23+58=<|eos|><|assistant|><tool_call>{"name": "calculator", "arguments":
    {"expression": "23+58"}}</tool_call><|eos|><|tool|>81<|eos|><|assistant|>81<|eos|>

The corpus holds both kinds of conversations (``tool_share`` of them call the tool, the others
answer with the right sum), a tokenizer is trained on it, and a randomly initialised GPT-2-shaped
model is fine-tuned briefly on the assistant turns (``SFTTrainer``, as the demo pre-trains its base
model): it then writes the call format, but calls the tool only some of the time.
"""

from __future__ import annotations

import json
import random
import re

from rlhfkit.data import render_messages
from rlhfkit.testing import tiny_causal_lm, tiny_tokenizer
from rlhfkit.trainers.sft import SFTConfig, SFTTrainer


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression of integers.

    Args:
        expression: digits with + - * between them, e.g. "23+58".
    """
    if not re.fullmatch(r"\d+(?:[+\-*]\d+)*", expression):
        raise ValueError(f"not an expression of integers: {expression!r}")
    return str(eval(expression, {"__builtins__": {}}, {}))  # noqa: S307 - digits and + - * only


def question(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"{a}+{b}", a + b


def tool_call(expression: str) -> str:
    return "<tool_call>" + json.dumps({"name": "calculator", "arguments": {"expression": expression}}) + "</tool_call>"


def conversations(n: int, tool_share: float, seed: int = 0) -> list[dict]:
    """``{"messages": [...]}`` rows: ``tool_share`` of them call the calculator, the others answer directly."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        expression, answer = question(rng)
        user = {"role": "user", "content": f"{expression}="}
        if rng.random() < tool_share:
            turns = [{"role": "assistant", "content": tool_call(expression)},
                     {"role": "tool", "content": str(answer)}, {"role": "assistant", "content": str(answer)}]
        else:
            turns = [{"role": "assistant", "content": str(answer)}]
        rows.append({"messages": [user, *turns]})
    return rows


def prompts(n: int, seed: int) -> list[dict]:
    """Prompt rows with the right answer as a column: ``{"prompt": [user message], "answer": "81"}``."""
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": f"{e}="}], "answer": str(a)}
            for e, a in (question(rng) for _ in range(n))]


def correct(prompts, completions, answer, **columns):
    """1.0 when the final assistant turn is exactly the right sum, else 0.0."""
    return [float(c[-1]["role"] == "assistant" and c[-1]["content"].strip() == a) for c, a in zip(completions, answer)]


def pretrain(output_dir, steps: int = 300, tool_share: float = 0.3, seed: int = 0, vocab_size: int = 600,
             learning_rate: float = 3e-3, hidden_size: int = 64, num_layers: int = 2):
    """(model, tokenizer): a tokenizer trained on the corpus and a tiny GPT-2 fine-tuned on its assistant turns."""
    rows = conversations(2000, tool_share, seed)
    probe = tiny_tokenizer(256)  # only its chat template is used, to render the corpus for the BPE trainer
    texts = [render_messages(probe, r["messages"], add_generation_prompt=False) for r in rows]
    tokenizer = tiny_tokenizer(vocab_size, corpus=texts, individual_digits=True, merge_across_words=True)
    model = tiny_causal_lm("gpt2", tokenizer, seed=seed, hidden_size=hidden_size, num_layers=num_layers,
                           max_positions=128)
    args = SFTConfig(output_dir=str(output_dir), max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=32,
                     assistant_only_loss=True, max_length=96, logging_steps=50, report_to="none", disable_tqdm=True,
                     seed=seed, warmup_steps=10)
    SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer).train()
    return model, tokenizer

