"""Rule rewards for examples/grpo.yaml and examples/rloo.yaml (TRL's reward-function contract).

A reward function gets the prompts, the completions and every other dataset column (plus
``completion_ids``, the sampled token ids) as keyword arguments and returns one number per
completion, or None where it does not apply. From the repository root the config names them
``examples.online_rewards:target_tokens`` (the current folder is on the import path).
"""

ROCK_WORDS = ("rock", "song", "night", "moon")


def target_tokens(prompts, completions, completion_ids, **columns):
    """Fraction of completion tokens whose id is a multiple of 4: a random tiny model starts near 0.25
    and GRPO/RLOO lift it within a few dozen steps (the learning tests use the same rule)."""
    return [sum(i % 4 == 0 for i in ids) / max(1, len(ids)) for ids in completion_ids]


def rock_words(prompts, completions, **columns):
    """Fraction of words that are rock words ("rock", "song", "night", "moon"); text completions only."""
    out = []
    for completion in completions:
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        words = text.lower().split()
        out.append(sum(w.strip(".,!?") in ROCK_WORDS for w in words) / max(1, len(words)))
    return out
