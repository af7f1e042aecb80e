"""Model sources are checked before Transformers is asked; model cards; pushing without checkpoints."""

import pytest
import yaml
from transformers import AutoModelForCausalLM

from rlhfkit.models.loading import (PUSH_IGNORE, HubError, ModelSourceError, check_model_source, load_pretrained,
                                    looks_local, push_folder, write_model_card)
from rlhfkit.trainers import DPOConfig


@pytest.mark.parametrize("name, local", [("./x", True), ("/abs/x", True), ("~/x", True), ("a/b/c", True),
                                         ("gpt2", False), ("owner/name", False), ("a\\b", True)])
def test_looks_local(name, local):
    assert looks_local(name) is local


def test_one_slash_name_is_local_when_its_first_folder_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local("runs/tiny")
    (tmp_path / "runs").mkdir()
    assert looks_local("runs/tiny")
    with pytest.raises(ModelSourceError, match=r"--model_name_or_path: no such folder 'runs/tiny' \(train one"):
        check_model_source("runs/tiny", "--model_name_or_path")


def test_offline_hub_id_not_in_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE is set so the hub id 'someone/not-cached-model-xyz'"):
        check_model_source("someone/not-cached-model-xyz", "--policy")


def test_corrupt_model_folder_names_the_argument(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelSourceError, match=r"^reference: could not load .* as AutoModelForCausalLM"):
        load_pretrained(AutoModelForCausalLM, str(tmp_path), "reference")


def test_model_card_front_matter_and_body(tmp_path):
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), model_name_or_path="runs/sft", dataset_name="owner/prefs",
                       loss_type="ipo")
    path = write_model_card(config.output_dir, method="dpo", config=config, metrics={"eval/loss": 0.25})
    text = path.read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front == {"library_name": "transformers", "tags": ["rlhfkit", "dpo", "ipo"], "base_model": "runs/sft",
                     "datasets": ["owner/prefs"]}
    assert "AutoModelForCausalLM.from_pretrained(\"dpo\")" in text and "| eval/loss | 0.25 |" in text
    assert "| beta | 0.1 |" in text and "lora_r" not in text


def test_push_uploads_without_checkpoints_and_wraps_failures(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = {}

    class Url(str):
        repo_id = "me/model"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: Url("https://hub/me/model"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.update(kw))
    assert push_folder(tmp_path, "me/model") == "https://hub/me/model"
    assert calls["repo_id"] == "me/model" and calls["ignore_patterns"] == PUSH_IGNORE and "checkpoint-*" in PUSH_IGNORE
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: (_ for _ in ()).throw(PermissionError("403 forbidden")))
    with pytest.raises(HubError, match=r"could not upload .* \(PermissionError: 403 forbidden\); the trained model"):
        push_folder(tmp_path, "me/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError, match="HF_HUB_OFFLINE is set"):
        push_folder(tmp_path, "me/model")


def test_offline_hub_id_hint_downloads_and_never_writes_a_tiny_model_under_the_hub_name(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelSourceError) as err:
        check_model_source("Qwen/Qwen2.5-0.5B-not-cached", "--model_name_or_path")
    assert "hf download Qwen/Qwen2.5-0.5B-not-cached" in str(err.value)
    assert "tiny-model" not in str(err.value)


def test_missing_reward_model_folder_suggests_the_commands_that_build_a_reward_model(tmp_path, monkeypatch):
    from rlhfkit.models.loading import check_reward_model_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelSourceError) as err:
        check_reward_model_source("runs/tiny-rm", "reward_funcs[1]")
    assert "rlhfkit reward --output_dir runs/tiny-rm" in str(err.value)
    assert "rlhfkit tiny-model --kind reward --output_dir runs/tiny-rm" in str(err.value)
