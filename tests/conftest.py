import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tokenizer():
    from rlhfkit.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer):
    """Saved tiny GPT-2 and Llama causal LMs (with tokenizer) and a tiny reward model."""
    from rlhfkit.testing import tiny_causal_lm, tiny_reward_model

    dirs = {}
    for name, build in (("gpt2", tiny_causal_lm), ("llama", tiny_causal_lm), ("reward", tiny_reward_model)):
        path = tmp_path_factory.mktemp(name)
        build("gpt2" if name == "reward" else name, tokenizer).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[name] = path
    return dirs
