"""The distributed helpers of ``Mechanics`` in one process: no launch, milliseconds each."""

import json
from types import SimpleNamespace

import pytest
import torch

from rlhfkit.trainers import mechanics
from rlhfkit.trainers.mechanics import Mechanics, shards_parameters

LAUNCH_VARS = ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
               "ACCELERATE_DEEPSPEED_CONFIG_FILE", "FSDP_VERSION")


@pytest.fixture
def env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_shards_parameters_reads_the_launch_environment(env, tmp_path):
    assert not shards_parameters()
    env.setenv("ACCELERATE_USE_FSDP", "true")
    assert shards_parameters()
    env.delenv("ACCELERATE_USE_FSDP")
    env.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert not shards_parameters()  # ZeRO-2 keeps whole weights on every rank
    env.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert shards_parameters()
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    env.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    assert not shards_parameters()  # the file's stage wins over the launcher's default


def _fake_accelerator(ds_config: dict, processes: int = 2):
    plugin = SimpleNamespace(deepspeed_config=ds_config)
    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=processes)


def test_deepspeed_auto_fields_come_from_the_trainer():
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
          "gradient_clipping": "auto", "zero_optimization": {"stage": 3}}
    mechanics._fill_deepspeed_config(_fake_accelerator(ds), micro_batch_size=4, gradient_accumulation_steps=2,
                                     max_grad_norm=0.5)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 2
    assert ds["gradient_clipping"] == 0.5 and ds["train_batch_size"] == 4 * 2 * 2
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    off = {"gradient_clipping": "auto"}
    mechanics._fill_deepspeed_config(_fake_accelerator(off), None, 1, None)
    assert off["gradient_clipping"] == 0.0 and "train_micro_batch_size_per_gpu" not in off  # no clipping: 0


def test_deepspeed_config_that_contradicts_the_trainer_is_refused(env):
    env.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "my_ds.json")
    ds = {"gradient_accumulation_steps": 4, "gradient_clipping": "auto"}
    with pytest.raises(ValueError, match=r'my_ds.json: gradient_accumulation_steps is 4 .* gives 2.*"auto"'):
        mechanics._fill_deepspeed_config(_fake_accelerator(ds), 4, 2, 1.0)
    same = {"gradient_accumulation_steps": 2, "gradient_clipping": 1.0}
    mechanics._fill_deepspeed_config(_fake_accelerator(same), 4, 2, 1.0)  # agreeing values are fine


def test_fsdp1_on_cpu_is_refused(env):
    from accelerate.utils import DistributedType

    env.setenv("ACCELERATE_USE_FSDP", "true")
    env.setenv("FSDP_VERSION", "1")
    fake = SimpleNamespace(state=SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
    with pytest.raises(ValueError, match="fsdp_version 2"):
        mechanics._fsdp_on_cpu(fake)
    env.setenv("ACCELERATE_USE_FSDP", "false")
    mechanics._fsdp_on_cpu(fake)  # not asked for FSDP: nothing changes
    assert fake.state.distributed_type == DistributedType.MULTI_CPU


def test_alias_tied_makes_tied_entries_one_tensor_again(tokenizer):
    from rlhfkit.testing import tiny_causal_lm

    model = tiny_causal_lm("gpt2", tokenizer, hidden_size=32)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # what a gather returns: copies
    assert state["lm_head.weight"] is not state["transformer.wte.weight"]
    Mechanics.alias_tied(state, model)
    assert state["lm_head.weight"] is state["transformer.wte.weight"]
    assert state["transformer.wpe.weight"] is not state["transformer.wte.weight"]


def test_trainable_params_follow_the_model_order_and_the_optimizer():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 1))
    net[1].requires_grad_(False)
    # the loop's optimiser lists weights (decay group) before biases: not the model's order
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2]},
                             {"params": [p for p in params if p.dim() < 2]}])
    assert Mechanics.trainable_params(net, opt) == [net[0].weight, net[0].bias, net[2].weight, net[2].bias]


def test_the_loop_refuses_resume_checkpoints_when_sharded(tokenizer, tmp_path, monkeypatch):
    from rlhfkit import SFTConfig, SFTTrainer
    from rlhfkit.testing import tiny_causal_lm

    monkeypatch.setattr(Mechanics, "sharded", property(lambda self: True))
    cfg = SFTConfig(output_dir=str(tmp_path), max_steps=1, save_steps=1, report_to="none", disable_tqdm=True)
    with pytest.raises(ValueError, match="save_steps and resume_from_checkpoint are not supported under FSDP"):
        SFTTrainer(model=tiny_causal_lm("gpt2", tokenizer, hidden_size=32), args=cfg,
                   train_dataset=[{"prompt": "a", "completion": " b"}] * 4, processing_class=tokenizer)
