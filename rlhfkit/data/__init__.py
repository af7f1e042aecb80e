"""Data layer: files and datasets -> validated records -> token tensors.

    records = load_records("data/prefs.jsonl")          # datasets.Dataset, source name attached
    fmt = detect_format(records)                        # "preference", "ratings", ...
    validate(records, fmt)                              # DataError names file, line, row, field
    pairs = to_preference_pairs(records, fmt)           # prompt, chosen, rejected, margin, weight
    tokenized = tokenize_dataset(pairs, tokenizer, 512, kind="pair")
    loader = DataLoader(tokenized, batch_size=8, collate_fn=PairCollator(tokenizer.pad_token_id))

Modules: ``errors`` (DataError, source names), ``load`` (readers, split), ``formats``
(detection, validation), ``prompts`` (prompt/completion boundary of preference rows),
``convert`` (format conversions), ``chat`` (chat templates), ``tokenize``, ``pack``,
``collate``, ``sampler``. Imports torch, datasets and tokenizers only; no models.
"""

from .chat import render_conversation, render_messages, render_pair, render_prompt
from .checks import ROLES, is_conversational
from .collate import PairCollator, RatingCollator, SFTCollator, UnpairedCollator
from .convert import to_preference_pairs, to_regression, to_sft, to_unpaired_preference
from .errors import DataError, Source, source_name
from .formats import FORMATS, detect_format, validate
from .folders import split_of
from .load import SUPPORTED_EXTENSIONS, is_hub_dataset, load_records, read_text, train_eval_split, use_text_field
from .pack import pack_sequences
from .prompts import common_prefix_at_word
from .sampler import GroupedPairSampler
from .tokenize import IGNORE_INDEX, TRUNCATION_MODES, SeparatorWarning, check_separators, tokenize_dataset, tokenize_pair, \
    tokenize_rating, tokenize_sft, tokenize_unpaired, truncate_pair

__all__ = [
    "FORMATS", "IGNORE_INDEX", "ROLES", "SUPPORTED_EXTENSIONS", "DataError", "GroupedPairSampler", "PairCollator",
    "RatingCollator", "SFTCollator", "SeparatorWarning", "Source", "check_separators", "common_prefix_at_word",
    "detect_format", "is_conversational", "load_records", "pack_sequences", "read_text", "render_conversation",
    "render_messages", "render_pair", "render_prompt", "source_name", "split_of", "to_preference_pairs",
    "to_regression", "to_sft", "tokenize_dataset", "tokenize_pair", "tokenize_rating", "tokenize_sft",
    "train_eval_split", "truncate_pair", "validate", "TRUNCATION_MODES", "UnpairedCollator", "to_unpaired_preference",
    "tokenize_unpaired", "is_hub_dataset", "use_text_field",
]
