"""Reward functions with TRL's contract: callables, dotted paths, reward-model folders, weighted scores."""

import functools
import math
import sys
import textwrap

import pytest
import torch

from rlhfkit.testing import tiny_reward_model, tiny_tokenizer
from rlhfkit.rollout.rewards import RewardFunc, check_reward_funcs, load_reward_funcs, score

PROMPTS = ["the cat ", "a dog ", "we "]
COMPLETIONS = ["sings all night.", "runs", "walk by the sea and sing"]


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def answer_reward(prompts, completions, answer, **kwargs):
    # not applicable (None) where there is no reference answer
    return [None if a is None else float(a in c) for c, a in zip(completions, answer)]


@pytest.fixture
def rewards_module(tmp_path, monkeypatch):
    """An importable module `my_rewards` in a temporary folder."""
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        NOT_A_FUNCTION = 3

        def words(prompts, completions, **kwargs):
            return [float(len(c.split())) for c in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_rewards"
    sys.modules.pop("my_rewards", None)


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("rm")
    tiny_reward_model("gpt2", tok, seed=3).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# ---------------------------------------------------------------- load_reward_funcs


def test_callables_keep_their_names_and_get_columns():
    funcs = load_reward_funcs([length_reward, functools.partial(answer_reward),
                               lambda prompts, completions, **k: [0.0] * 3])
    assert [f.name for f in funcs] == ["length_reward", "answer_reward", "<lambda>"]
    assert funcs[0](PROMPTS, COMPLETIONS) == [16.0, 4.0, 24.0]
    assert funcs[1](PROMPTS, COMPLETIONS, answer=["night", None, "sea"]) == [1.0, None, 1.0]
    assert load_reward_funcs(length_reward)[0].name == "length_reward"  # a single spec
    same = RewardFunc("mine", length_reward)
    assert load_reward_funcs([same])[0] is same


@pytest.mark.parametrize("form", ["{m}:words", "{m}.words"])
def test_dotted_paths(rewards_module, form):
    (func,) = load_reward_funcs([form.format(m=rewards_module)])
    assert func.name == "words"
    assert func(PROMPTS, COMPLETIONS) == [3.0, 1.0, 6.0]


def test_dotted_path_errors(rewards_module):
    with pytest.raises(ValueError, match=r"reward_funcs\[1\]: cannot import module 'no_such_mod'.*NotFoundError"):
        load_reward_funcs([length_reward, "no_such_mod:f"])
    with pytest.raises(ValueError, match="module 'my_rewards' has no attribute 'nope'"):
        load_reward_funcs(["my_rewards:nope"])
    with pytest.raises(ValueError, match="is an int, not a function"):
        load_reward_funcs(["my_rewards.NOT_A_FUNCTION"])


def test_file_path_spec(rewards_module, tmp_path):
    (func,) = load_reward_funcs([f"{tmp_path / 'my_rewards.py'}:words"])
    assert func.name == "words" and func(PROMPTS, COMPLETIONS) == [3.0, 1.0, 6.0]
    with pytest.raises(ValueError, match=r"my_rewards.py' has no attribute 'word' .*did you mean 'words'\?"):
        load_reward_funcs([f"{tmp_path / 'my_rewards.py'}:word"])
    with pytest.raises(ValueError, match=r"'my_rewards.py' is a Python file; name the function in it"):
        load_reward_funcs(["my_rewards.py"])


def test_import_failures_name_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "broken_rewards.py").write_text("x = 1\ndef f(prompts, completions:\n    return []\n")
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec in ("broken_rewards:f", f"{tmp_path / 'broken_rewards.py'}:f"):
        with pytest.raises(ValueError, match=r"reward_funcs\[0\]: importing .* failed at .*broken_rewards.py line 2: "
                                             r"SyntaxError"):
            load_reward_funcs([spec])
    with pytest.raises(ValueError, match=r"needs_dep.py line 1: ModuleNotFoundError: No module named "
                                         r"'no_such_dependency_xyz'; fix the module"):
        load_reward_funcs(["needs_dep:f"])
    sys.modules.pop("broken_rewards", None)


def test_check_reward_funcs_without_loading(rewards_module, reward_dir, tmp_path):
    from rlhfkit.testing import save_tiny

    check_reward_funcs([f"{rewards_module}:words", str(reward_dir), length_reward])  # all fine
    lm = save_tiny(tmp_path / "lm", "gpt2")
    with pytest.raises(ValueError, match=r"--reward_funcs\[1\]: .*lm' is a causal language model \(GPT2LMHeadModel\), "
                                         "not a reward model"):
        check_reward_funcs([f"{rewards_module}:words", str(lm)], "--reward_funcs")
    with pytest.raises(ValueError, match=r"^--reward_funcs: cannot import module 'nope_q'"):
        check_reward_funcs("nope_q:f", "--reward_funcs")
    bare = tmp_path / "bare"
    tiny_reward_model("gpt2", tiny_tokenizer()).save_pretrained(bare)
    with pytest.raises(ValueError, match="has no tokenizer files"):
        check_reward_funcs([str(bare)])
    check_reward_funcs([str(bare)], tokenizer_given=True)


def test_bad_specs():
    with pytest.raises(ValueError, match=r"reward_funcs\[0\].*no such folder './no/such/rm'"):
        load_reward_funcs(["./no/such/rm"])
    with pytest.raises(ValueError, match="reward_funcs is empty"):
        load_reward_funcs([])
    with pytest.raises(ValueError, match=r"reward_funcs\[0\]: expected a function.*got int 3"):
        load_reward_funcs([3])


def _direct_scores(path, prompts, completions):
    """Each row scored alone (no padding), on ids built as RewardTrainer trains: prompt ids + response + EOS."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhfkit.data import tokenize_rating

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out = []
    for p, c in zip(prompts, completions):
        ids = tokenize_rating({"prompt": p, "response": c, "score": 0.0}, tok, 512)["input_ids"]
        assert ids[-1] == tok.eos_token_id
        with torch.no_grad():
            out.append(model(input_ids=torch.tensor([ids])).logits[0, 0].item())
    return out


def test_reward_model_folder(reward_dir):
    (func,) = load_reward_funcs([str(reward_dir)])
    assert func.name == reward_dir.name and "reward model" in func.source
    got = func(PROMPTS, COMPLETIONS, answer=[None] * 3)  # columns are ignored
    want = _direct_scores(reward_dir, PROMPTS, COMPLETIONS)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert len(set(round(x, 6) for x in got)) == 3  # a real model, different scores


def test_reward_model_folder_with_conversations(reward_dir):
    # message prompts go through the chat template; completions as TRL gives them (assistant messages)
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    completions = [[{"role": "assistant", "content": c}] for c in COMPLETIONS]
    (func,) = load_reward_funcs([reward_dir])
    got = func(prompts, completions)
    assert len(got) == len(prompts) > 0
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhfkit.data.chat import render_messages

    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tok = AutoTokenizer.from_pretrained(reward_dir)
    for g, p, c in zip(got, prompts, completions):
        text = render_messages(tok, p + c, add_generation_prompt=False)
        assert text.startswith("<|user|>") and text.endswith(tok.eos_token)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            assert g == pytest.approx(model(input_ids=torch.tensor([ids])).logits[0, 0].item(), rel=1e-5, abs=1e-6)


def test_reward_model_folder_without_tokenizer(tmp_path, reward_dir):
    tok = tiny_tokenizer()
    tiny_reward_model("gpt2", tok, seed=3).save_pretrained(tmp_path / "bare")
    with pytest.raises(ValueError, match=r"reward_funcs\[0\]: reward model folder .* has no tokenizer files"):
        load_reward_funcs([str(tmp_path / "bare")])
    (func,) = load_reward_funcs([str(tmp_path / "bare")], tokenizer=tok)
    want = _direct_scores(reward_dir, PROMPTS, COMPLETIONS)  # same weights (seed 3), same tokenizer
    assert func(PROMPTS, COMPLETIONS) == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_loaded_model_needs_tokenizer():
    model = tiny_reward_model("gpt2", tiny_tokenizer())
    with pytest.raises(ValueError, match="needs tokenizer="):
        load_reward_funcs([model])
    (func,) = load_reward_funcs([model], tokenizer=tiny_tokenizer())
    assert len(func(PROMPTS, COMPLETIONS)) == 3


# ---------------------------------------------------------------- score


def test_score_weights_and_nan():
    columns = {"answer": ["night", None, "dog"]}
    rewards, per_func = score([length_reward, answer_reward], [0.5, 10.0], PROMPTS, COMPLETIONS, columns)
    assert per_func.shape == (3, 2) and per_func.dtype == torch.float32
    assert per_func[:, 0].tolist() == [16.0, 4.0, 24.0]
    assert per_func[0, 1].item() == 1.0 and math.isnan(per_func[1, 1].item()) and per_func[2, 1].item() == 0.0
    # nansum: the None of row 1 is left out, not counted as 0 * weight
    assert rewards.tolist() == [8.0 + 10.0, 2.0, 12.0]
    rewards, _ = score([length_reward, answer_reward], None, PROMPTS, COMPLETIONS, columns)
    assert rewards.tolist() == [17.0, 4.0, 24.0]


def test_score_row_without_any_reward_warns_and_is_zero():
    def only_first(prompts, completions, **kw):
        return [1.5] + [None] * (len(completions) - 1)

    with pytest.warns(UserWarning, match=r"2 row\(s\) \(first: row 1, prompt 'a dog '"):
        rewards, per_func = score([only_first], [2.0], PROMPTS, COMPLETIONS)
    assert rewards.tolist() == [3.0, 0.0, 0.0]
    assert torch.isnan(per_func[1:]).all()
    with pytest.warns(UserWarning, match=r"their reward is NaN \(no advantage\)"):
        rewards, _ = score([only_first], [2.0], PROMPTS, COMPLETIONS, keep_nan=True)
    assert rewards[0].item() == 3.0 and torch.isnan(rewards[1:]).all()


def test_score_accepts_numbers_of_every_kind():
    import numpy as np

    def mixed(prompts, completions, **kw):
        return [True, np.float32(0.25), torch.tensor(2)]

    rewards, _ = score([mixed], None, PROMPTS, COMPLETIONS)
    assert rewards.tolist() == [1.0, 0.25, 2.0]
    rewards, _ = score([lambda prompts, completions, **k: torch.tensor([1.0, 2.0, 3.0])], None, PROMPTS, COMPLETIONS)
    assert rewards.tolist() == [1.0, 2.0, 3.0]


def test_score_errors():
    def short(prompts, completions, **kw):
        return [1.0]

    def text(prompts, completions, **kw):
        return [1.0, "good", 0.0]

    with pytest.raises(ValueError, match="'short' .* returned 1 scores for 3 completions"):
        score([length_reward, short], None, PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="'text' .* returned str 'good' for row 1"):
        score([text], None, PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="'scalar' .* returned float; expected a list of 3 scores"):
        score([RewardFunc("scalar", lambda prompts, completions, **k: 1.0)], None, PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match=r"reward_weights has 1 entries for 2 reward functions"):
        score([length_reward, length_reward], [1.0], PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="column 'answer' has 2 values for 3 completions"):
        score([answer_reward], None, PROMPTS, COMPLETIONS, {"answer": ["a", "b"]})
    with pytest.raises(ValueError, match="got 3 prompts and 2 completions"):
        score([length_reward], None, PROMPTS, COMPLETIONS[:2])
    with pytest.raises(TypeError):  # a missing column is the function's own error, as in TRL
        score([answer_reward], None, PROMPTS, COMPLETIONS)
