"""The demo's generated corpus and its hidden true quality (no copyrighted text).

Every text is a sentence opening ("we're halfway", "the old road", ...) and a completion
in one of five styles: rock song, news report, recipe, weather forecast, diary. A
completion is two to four short fragments of one style (sometimes of two styles), so a
model trained on the mix writes each style some of the time.

The hidden true quality of a response is a transparent rule that the simulated annotators
observe only noisily: how "rock song" it is, written in real words.

    quality = clip((distinct rock words - 0.5 * repeated rock words) / 4, 0, 1) * known-word share

Up to four different words from ``ROCK_WORDS`` raise it by 1/4 each; repeating one lowers
it by 1/8; and it is scaled by the share of the response's words that exist in the corpus
(``KNOWN_WORDS``). A policy that spams "fire fire fire" or drifts into made-up words
scores low on quality even when a learned reward model likes it, so reward
over-optimisation becomes visible.
"""

from __future__ import annotations

import random
import re

STYLES = {
    "rock song": [
        "we rock all night", "turn the guitars up loud", "hearts on fire", "wild and electric",
        "the drums like thunder", "scream it to the stars", "oh yeah baby", "alive on the stage",
        "neon lights burning", "roll with the band", "one more song tonight", "shake the whole city",
        "our voices loud and free", "dancing in the fire", "electric hearts never sleep", "thunder in my veins",
    ],
    "news report": [
        "officials said on tuesday", "the council approved the budget", "according to a new report",
        "prices rose by two percent", "the minister declined to comment", "in a statement released today",
        "the vote is expected next week", "analysts expect slower growth", "the company reported higher profits",
        "residents were asked to stay informed", "the agency confirmed the figures", "talks will resume on monday",
    ],
    "recipe": [
        "add two cups of flour", "stir gently for five minutes", "season with salt and pepper",
        "bake until golden brown", "let the dough rest", "chop the onions finely", "serve warm with fresh bread",
        "whisk the eggs and sugar", "simmer over low heat", "melt the butter in a pan", "preheat the oven",
        "sprinkle with chopped herbs",
    ],
    "weather": [
        "light rain in the north", "a high of twelve degrees", "clouds clearing by the afternoon",
        "winds from the west", "a chance of showers", "cooler temperatures overnight", "sunny spells in the south",
        "fog early in the morning", "mild and dry for most", "frost in rural areas", "heavy rain at the coast",
        "warmer by the weekend",
    ],
    "diary": [
        "i finally cleaned my desk", "the bus was late again", "i called my sister", "we had soup for lunch",
        "i read a few pages", "the cat slept all day", "i should water the plants", "nothing much happened",
        "i walked to the shop", "my tea went cold", "tomorrow i will start early", "the neighbours were quiet",
    ],
}
ROCK = "rock song"
# The words that make a response "rock song": the content words of its fragments.
ROCK_WORDS = frozenset(
    w for frag in STYLES[ROCK] for w in frag.split()
    if w not in {"we", "all", "the", "up", "on", "and", "like", "it", "to", "with", "one", "more", "our", "in",
                 "my", "never", "whole"}
)

KNOWN_WORDS = frozenset(w for frags in STYLES.values() for frag in frags for w in frag.split())

# Train prompts feed ratings, reward model, PPO and DPO; eval prompts are held out from all of them.
TRAIN_PROMPTS = [
    "we're halfway", "the band", "all night", "under the moon", "my friend", "the river", "a robot", "they",
    "this morning", "the city", "my heart", "the old road", "tonight", "the teacher", "our team", "the kitchen",
]
EVAL_PROMPTS = ["the summer", "last year", "the station", "my brother", "the garden", "after the show",
                "the long winter", "somewhere"]

_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def rock_quality(text: str) -> float:
    """The hidden true quality in [0, 1] (see the module docstring); 0 for a response without words."""
    found = words(text)
    if not found:
        return 0.0
    rock = [w for w in found if w in ROCK_WORDS]
    distinct = len(set(rock))
    known = sum(w in KNOWN_WORDS for w in found) / len(found)
    return min(1.0, max(0.0, (distinct - 0.5 * (len(rock) - distinct)) / 4)) * known


def true_quality(prompts: list[str], responses: list[str]) -> list[float]:
    """``rock_quality`` of each response: a ``reward_fn(prompts, responses)`` for eval and PPO."""
    return [rock_quality(r) for r in responses]


def style_weights(rock_share: float) -> dict[str, float]:
    """Sampling weight of each style: ``rock_share`` for rock song, the rest split evenly."""
    others = [s for s in STYLES if s != ROCK]
    return {ROCK: rock_share, **{s: (1 - rock_share) / len(others) for s in others}}


def completion(rng: random.Random, weights: dict[str, float], mix: float = 0.15) -> str:
    """Two to four fragments of one style; with probability ``mix`` the last one from another style."""
    names, probs = list(weights), list(weights.values())
    style = rng.choices(names, probs)[0]
    frags = rng.sample(STYLES[style], rng.randint(2, 3))
    if rng.random() < mix:
        other = rng.choice([s for s in STYLES if s != style])
        frags.append(rng.choice(STYLES[other]))
    return " " + ", ".join(frags)


def sft_rows(n: int, rock_share: float, prompts: list[str], seed: int = 0) -> list[dict]:
    """Demonstrations ``{"prompt", "completion"}`` for supervised fine-tuning."""
    rng = random.Random(seed)
    weights = style_weights(rock_share)
    return [{"prompt": rng.choice(prompts), "completion": completion(rng, weights)} for _ in range(n)]


def pretrain_texts(n: int, rock_share: float, prompts: list[str], seed: int = 0) -> list[str]:
    """"Web text" for pre-training: openings with rambling completions of several fragments."""
    rng = random.Random(seed)
    weights = style_weights(rock_share)
    texts = []
    for _ in range(n):
        parts = [completion(rng, weights, mix=0.3) for _ in range(rng.randint(1, 2))]
        texts.append(rng.choice(prompts) + ",".join(parts))
    return texts
