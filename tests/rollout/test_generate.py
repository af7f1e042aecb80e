import torch

from rlhfkit.rollout import generate_responses, left_pad, truncate_after_eos


def test_left_pad():
    ids, mask = left_pad([torch.tensor([1, 2, 3]), torch.tensor([4])], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_truncate_after_eos_keeps_first_eos():
    assert truncate_after_eos(torch.tensor([5, 6, 2, 7, 2]), 2).tolist() == [5, 6, 2]
    assert truncate_after_eos(torch.tensor([5, 6]), 2).tolist() == [5, 6]
    assert truncate_after_eos(torch.tensor([5, 3, 6]), [3, 9]).tolist() == [5, 3]


class _Scripted(torch.nn.Module):
    """A fake model whose generate appends a fixed continuation, to test the bookkeeping."""

    def __init__(self, continuation, pad):
        super().__init__()
        self.continuation, self.pad = continuation, pad
        self.seen = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.seen.append((input_ids.clone(), attention_mask.clone(), kwargs))
        cont = torch.tensor(self.continuation).expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, cont], dim=1)


def test_generate_strips_prompt_padding_and_after_eos():
    eos, pad = 2, 0
    model = _Scripted([7, eos, pad, pad], pad)
    queries = [torch.tensor([5, 6, eos]), torch.tensor([9])]  # EOS inside a prompt must not cut it
    out = generate_responses(model, queries, pad_token_id=pad, eos_token_id=eos, batch_size=4,
                             return_prompt=True, generation_kwargs={"max_new_tokens": 4})
    assert [o.tolist() for o in out] == [[5, 6, eos, 7, eos], [9, 7, eos]]
    ids, mask, kwargs = model.seen[0]
    assert ids.tolist() == [[5, 6, eos], [pad, pad, 9]] and mask[1].tolist() == [0, 0, 1]
    assert kwargs["pad_token_id"] == pad
    only = generate_responses(model, queries, pad_token_id=pad, eos_token_id=eos, return_prompt=False)
    assert [o.tolist() for o in only] == [[7, eos], [7, eos]]
    raw = generate_responses(model, queries, pad_token_id=pad, eos_token_id=eos, return_prompt=False,
                             remove_padding=False)
    assert [o.tolist() for o in raw] == [[7, eos, pad, pad]] * 2


def test_generate_batches_and_length_sampler():
    model = _Scripted([7], 0)
    lengths = iter([3, 5])
    out = generate_responses(model, [torch.tensor([i + 3]) for i in range(5)], pad_token_id=0, eos_token_id=2,
                             batch_size=3, length_sampler=lambda: next(lengths))
    assert len(out) == 5 and len(model.seen) == 2
    assert [s[2]["max_new_tokens"] for s in model.seen] == [3, 5]
