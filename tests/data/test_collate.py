"""Collators (shapes, padding, -100) and the grouped pair sampler."""

import torch
from torch.utils.data import DataLoader

from rlhfkit.data import GroupedPairSampler, PairCollator, RatingCollator, SFTCollator

PAD = 0


def test_sft_collator_pads_right_with_minus_100_labels():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
            {"input_ids": [8], "attention_mask": [1], "labels": [8]}]
    batch = SFTCollator(PAD)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["input_ids"].dtype == torch.long and "position_ids" not in batch


def test_sft_collator_left_padding_multiple_of_and_position_ids():
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7], "position_ids": [0, 1, 0]},
            {"input_ids": [8], "labels": [8], "position_ids": [0]}]
    batch = SFTCollator(PAD, padding_side="left", pad_to_multiple_of=4)(rows)
    assert batch["input_ids"].shape == (2, 4)
    assert batch["input_ids"].tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    assert batch["labels"][1].tolist() == [-100, -100, -100, 8]
    assert batch["position_ids"].tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]


def test_pair_collator_puts_chosen_first_and_masks_prompt_and_padding():
    rows = [{"chosen_input_ids": [1, 2, 3, 4], "rejected_input_ids": [1, 2, 9], "prompt_length": 2,
             "margin": 1.0, "weight": 0.5},
            {"chosen_input_ids": [7, 8], "rejected_input_ids": [7, 6, 6, 6, 6], "prompt_length": 1,
             "margin": 0.0, "weight": 1.0}]
    batch = PairCollator(PAD)(rows)
    assert batch["input_ids"].shape == (4, 5) and batch["labels"].shape == (4, 5)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 0], [7, 8, 0, 0, 0], [1, 2, 9, 0, 0], [7, 6, 6, 6, 6]]
    assert batch["labels"].tolist() == [[-100, -100, 3, 4, -100], [-100, 8, -100, -100, -100],
                                        [-100, -100, 9, -100, -100], [-100, 6, 6, 6, 6]]
    assert batch["attention_mask"].sum(-1).tolist() == [4, 2, 3, 5]
    assert batch["prompt_lengths"].tolist() == [2, 1, 2, 1]
    assert batch["margin"].tolist() == [1.0, 0.0] and batch["weight"].tolist() == [0.5, 1.0]


def test_pair_collator_left_padding_keeps_labels_aligned():
    rows = [{"chosen_input_ids": [1, 2, 3], "rejected_input_ids": [1, 4], "prompt_length": 1}]
    batch = PairCollator(PAD, padding_side="left")(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [0, 1, 4]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [-100, -100, 4]]
    assert batch["weight"].tolist() == [1.0] and batch["margin"].tolist() == [0.0]


def test_rating_collator():
    batch = RatingCollator(PAD)([{"input_ids": [3, 4, 5], "score": 2}, {"input_ids": [6], "score": -1.5}])
    assert batch["input_ids"].tolist() == [[3, 4, 5], [6, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["score"].dtype == torch.float32 and batch["score"].tolist() == [2.0, -1.5]


def batch_groups(sampler, groups):
    return [[groups[i] for i in batch] for batch in sampler.batches()]


def test_grouped_sampler_keeps_groups_in_one_batch():
    groups = [0] * 3 + [1] * 3 + [2] * 1 + [3] * 2 + [4] * 3  # 12 pairs; every group fits a batch of 4
    sampler = GroupedPairSampler(groups, batch_size=4, seed=1)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(12))
    assert all(len(b) == 4 for b in batches[:-1])
    split = [g for g in set(groups) if sum(g in b for b in batch_groups(sampler, groups)) > 1]
    # A group is split only when nothing in the lookahead fits the space left.
    assert len(split) <= 1
    assert list(sampler) == [i for b in batches for i in b] and len(sampler) == 12


def test_grouped_sampler_never_splits_groups_that_tile_the_batch():
    groups = [i // 2 for i in range(20)] + [10] * 4  # pairs of 2 and one group of 4, batch of 4
    for seed in range(5):
        per_batch = batch_groups(GroupedPairSampler(groups, batch_size=4, seed=seed), groups)
        assert all(len(b) == 4 for b in per_batch)
        assert all(sum(g in b for b in per_batch) == 1 for g in set(groups))


def test_grouped_sampler_is_deterministic_and_reshuffles_per_epoch():
    groups = [i // 3 for i in range(30)]
    a, b = GroupedPairSampler(groups, 6, seed=0), GroupedPairSampler(groups, 6, seed=0)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_large_group_fills_consecutive_batches():
    groups = [0] * 5 + [1] * 3
    batches = batch_groups(GroupedPairSampler(groups, batch_size=4, seed=0), groups)
    flat = [g for b in batches for g in b]
    assert [len(b) for b in batches] == [4, 4]
    assert flat.count(0) == 5 and flat.index(0) + 5 == len(flat) - flat[::-1].index(0)  # zeros are contiguous


def test_grouped_sampler_batches_line_up_with_a_dataloader():
    groups = [0, 0, 1, 1, 2, 2, 3, 3]
    sampler = GroupedPairSampler(groups, batch_size=4, seed=0)
    loader = DataLoader(list(range(8)), batch_size=4, sampler=sampler)
    assert [b.tolist() for b in loader] == sampler.batches()
