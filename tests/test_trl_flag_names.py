"""The command-line names of TRL 1.16's `trl sft|reward|dpo|kto|grpo|rloo`, command by command: each is either
accepted by `rlhfkit <command>` or listed here as not supported, with the reason.

TRL's parser for a command is ScriptArguments (GRPO/RLOO: plus reward_model_name_or_path and reward_funcs),
the command's config (Transformers' TrainingArguments plus the method's fields), ModelConfig and
DatasetMixtureConfig. The lists below are written out by hand from TRL 1.16.0 and Transformers 5.24.
"""

from __future__ import annotations

import dataclasses

import pytest

from rlhfkit.cli import build_parser
from rlhfkit.trainers.config import field_kind

COMMANDS = ("sft", "reward", "dpo", "kto", "grpo", "rloo")

# ---------------------------------------------------------------- accepted by rlhfkit
SUPPORTED_ALL = [
    # ScriptArguments
    "dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split",
    # ModelConfig
    "model_name_or_path", "model_revision", "dtype", "attn_implementation", "use_peft", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "lora_modules_to_save", "use_rslora", "use_dora", "load_in_8bit",
    "load_in_4bit", "bnb_4bit_quant_type", "use_bnb_nested_quant",
    # TrainingArguments
    "output_dir", "per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs", "max_steps",
    "learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay", "adam_beta1", "adam_beta2",
    "adam_epsilon", "gradient_accumulation_steps", "max_grad_norm", "bf16", "fp16", "gradient_checkpointing",
    "torch_compile", "logging_strategy", "logging_steps", "eval_strategy", "eval_steps", "save_strategy", "save_steps",
    "save_total_limit", "disable_tqdm", "report_to", "run_name", "push_to_hub", "hub_model_id", "hub_private_repo",
    "seed", "dataloader_num_workers", "resume_from_checkpoint",
    # every TRL trainer config
    "trust_remote_code",
]
ONLINE = ["num_generations", "num_generations_eval", "max_completion_length", "generation_batch_size",
          "steps_per_generation", "temperature", "top_p", "top_k", "min_p", "generation_kwargs", "repetition_penalty",
          "use_vllm", "vllm_mode", "vllm_gpu_memory_utilization", "beta", "num_iterations", "epsilon", "epsilon_high",
          "reward_weights", "mask_truncated_completions", "sync_ref_model", "ref_model_mixup_alpha",
          "ref_model_sync_steps", "log_completions", "num_completions_to_print", "reward_funcs"]
SUPPORTED = {
    "sft": ["max_length", "packing", "completion_only_loss", "assistant_only_loss", "dataset_text_field"],
    "reward": ["max_length", "center_rewards_coefficient"],
    "dpo": ["max_length", "precompute_ref_log_probs", "loss_type", "label_smoothing", "beta", "padding_free"],
    "kto": ["max_length", "precompute_ref_log_probs", "loss_type", "beta", "desirable_weight", "undesirable_weight",
            "disable_dropout"],
    "grpo": ONLINE + ["delta", "importance_sampling_level", "scale_rewards", "loss_type", "top_entropy_quantile",
                      "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                      "vllm_importance_sampling_clip_max", "vllm_importance_sampling_clip_min",
                      "max_tool_calling_iterations"],
    "rloo": ONLINE + ["normalize_advantages", "reward_clip_range"],
}

# ---------------------------------------------------------------- not supported, and why
NOT_SUPPORTED_ALL = {
    "rlhfkit's own loop runs the devices and processes (Accelerate); launch settings go to `accelerate launch` and "
    "its config file (docs/distributed.md)": [
        "local_rank", "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_static_graph",
        "ddp_backend", "ddp_timeout", "fsdp", "fsdp_config", "deepspeed", "accelerator_config", "parallelism_config",
        "use_cpu", "log_on_each_node", "save_on_each_node", "ignore_bias_buffers"],
    "Trainer options of a loop rlhfkit does not run (prediction, best-model tracking, callbacks, metrics functions)": [
        "do_train", "do_eval", "do_predict", "prediction_loss_only", "eval_do_concat_batches", "eval_use_gather_object",
        "eval_accumulation_steps", "include_for_metrics", "batch_eval_metrics", "load_best_model_at_end",
        "metric_for_best_model", "greater_is_better", "restore_callback_states_from_checkpoint", "label_names",
        "length_column_name", "remove_unused_columns", "skip_memory_metrics", "debug", "enable_jit_checkpoint",
        "save_only_model", "eval_delay", "eval_on_start", "auto_find_batch_size", "include_num_input_tokens_seen",
        "average_tokens_across_devices", "full_determinism", "ignore_data_skip", "train_sampling_strategy"],
    "rlhfkit logs every step it is asked to and leaves log levels to Python's logging": [
        "logging_first_step", "logging_nan_inf_filter", "log_level", "log_level_replica"],
    "the hub is reached only through push_to_hub (a login with `hf auth login`, one upload after training)": [
        "hub_token", "hub_strategy", "hub_always_push", "hub_revision"],
    "Trackio is named by report_to; its project and Spaces are not configured from rlhfkit": [
        "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id"],
    "optimiser and schedule extras that only some of TrainingArguments' optimisers read": [
        "optim_args", "optim_target_modules", "lr_scheduler_kwargs"],
    "precision and kernel switches rlhfkit does not expose: autocast covers evaluation too, TF32 is torch's own "
    "setting, and torch.compile runs with its default backend and mode": [
        "bf16_full_eval", "fp16_full_eval", "tf32", "torch_compile_backend", "torch_compile_mode", "use_liger_kernel",
        "liger_kernel_config", "use_cache", "torch_empty_cache_steps"],
    "gradient checkpointing is on or off (gradient_checkpointing); no activation offloading or checkpointing "
    "variants": ["activation_checkpointing", "activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"],
    "NEFTune and label smoothing of the SFT cross-entropy are not implemented": [
        "neftune_noise_alpha", "label_smoothing_factor"],
    "the data loader shuffles from seed each epoch, in the training process (dataloader_num_workers aside)": [
        "data_seed", "dataloader_drop_last", "dataloader_pin_memory", "dataloader_persistent_workers",
        "dataloader_prefetch_factor", "dataloader_multiprocessing_context", "dataloader_in_order"],
    "one dataset per run, read in full (validation needs every row): no streaming, no mixtures": [
        "dataset_streaming", "datasets", "streaming", "test_split_size"],
    "the task of the adapter follows the command (SEQ_CLS for reward, CAUSAL_LM otherwise); adapters target "
    "modules, not bare parameters; 4-bit weights are stored as bitsandbytes' default": [
        "lora_task_type", "lora_target_parameters", "bnb_4bit_quant_storage"],
    "models load from model_name_or_path with the model flags above; no free-form from_pretrained keywords": [
        "model_init_kwargs"],
    "batches are padded to their longest row": ["pad_to_multiple_of"],
}
TOKENS = ("the tokenizer's own chat template, pad and eos tokens are used (chat_template_path, eos_token and "
          "pad_token would replace them)")
NUM_PROC = "tokenisation runs in the training process"
MOE = "mixture-of-experts router losses are not implemented"
OFFLOAD = "activation offloading is not implemented (gradient_checkpointing saves activation memory)"
NOT_SUPPORTED = {
    "sft": {"packing concatenates examples (no best-fit packing, padding-free batches or separate eval packing); "
            "rows are truncated at the end; no dataset preprocessing switches": [
                "packing_strategy", "padding_free", "eval_packing", "truncation_mode", "shuffle_dataset",
                "dataset_kwargs"],
            "the SFT loss is the token-mean cross-entropy (TRL's nll); DFT is not implemented": ["loss_type"],
            TOKENS: ["chat_template_path", "eos_token", "pad_token"], NUM_PROC: ["dataset_num_proc"],
            MOE: ["router_aux_loss_coef"], OFFLOAD: ["activation_offloading"]},
    "reward": {"dropout stays as the model has it": ["disable_dropout"],
               TOKENS: ["chat_template_path", "eos_token", "pad_token"], NUM_PROC: ["dataset_num_proc"],
               OFFLOAD: ["activation_offloading"]},
    "dpo": {"dropout stays as the model has it": ["disable_dropout"],
            "one loss_type per run; the f-divergence, LD, weighting and DiscoPOP variants are not implemented": [
                "loss_weights", "ld_alpha", "f_divergence_type", "f_alpha_divergence_coef", "use_weighting",
                "discopop_tau"],
            "the DPO reference stays frozen (TR-DPO's sync is in GRPO/RLOO only)": [
                "sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps"],
            "pairs are truncated completion first, then the prompt from the left": ["truncation_mode"],
            "precompute_ref_log_probs scores with per_device_eval_batch_size": ["precompute_ref_batch_size"],
            TOKENS: ["pad_token"], NUM_PROC: ["dataset_num_proc"], MOE: ["router_aux_loss_coef"],
            OFFLOAD: ["activation_offloading"]},
    "kto": {"the KTO reference stays frozen": ["sync_ref_model", "ref_model_mixup_alpha", "ref_model_sync_steps"],
            "precompute_ref_log_probs scores with per_device_eval_batch_size": ["precompute_ref_batch_size"],
            NUM_PROC: ["dataset_num_proc"], MOE: ["router_aux_loss_coef"], OFFLOAD: ["activation_offloading"]},
}
ONLINE_NOT_SUPPORTED = {
    "vLLM runs colocated in the training process only; no server mode and no engine tuning flags": [
        "vllm_model_impl", "vllm_enable_sleep_mode", "vllm_structured_outputs_regex", "vllm_server_base_url",
        "vllm_server_host", "vllm_server_port", "vllm_server_timeout", "vllm_group_port", "vllm_max_model_length",
        "vllm_tensor_parallel_size"],
    "generation is Hugging Face generate (or vLLM) with the sampling flags above; no continuous batching, paged "
    "attention, cache implementations or chat template keywords": [
        "use_transformers_continuous_batching", "transformers_continuous_batching_config", "use_transformers_paged",
        "cache_implementation", "chat_template_kwargs"],
    "completions are logged to completions.jsonl (log_completions); no hub dataset, images or unique-prompt view": [
        "log_multimodal", "log_unique_prompts"],
    "prompts are sampled in a seeded order that is always shuffled; the policy keeps its dropout; DeepSpeed ZeRO-3 "
    "gathers for generation as needed": ["shuffle_dataset", "disable_dropout", "ds3_gather_for_generation"],
    "reward models are given as folders in reward_funcs": ["reward_model_name_or_path"],
    MOE: ["router_aux_loss_coef"],
}
NOT_SUPPORTED["rloo"] = ONLINE_NOT_SUPPORTED
NOT_SUPPORTED["grpo"] = {
    **ONLINE_NOT_SUPPORTED,
    "completions go to completions.jsonl in output_dir, not to a hub dataset": ["log_completions_hub_repo"],
    "the loss types rlhfkit implements (grpo, dr_grpo, dapo, bnpo; GSPO through importance_sampling_level) need "
    "none of these: SAPO, VESPO, entropy bonuses, off-policy masks and the KL bias correction are not implemented": [
        "sapo_temperature_neg", "sapo_temperature_pos", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg",
        "vespo_lambda_neg", "entropy_coef", "use_adaptive_entropy", "entropy_coef_min", "entropy_coef_max",
        "entropy_coef_delta", "entropy_target", "off_policy_mask_threshold", "use_bias_correction_kl",
        "cast_lm_head_to_fp32"],
    "several reward functions are summed with reward_weights, then normalised per group": [
        "multi_objective_aggregation"],
    "the engine's importance weight is clipped by vllm_importance_sampling_clip_max / _min": [
        "vllm_importance_sampling_cap"],
}


def supported(command: str) -> list[str]:
    return SUPPORTED_ALL + SUPPORTED[command]


def not_supported(command: str) -> dict[str, str]:
    out = {name: why for why, names in NOT_SUPPORTED_ALL.items() for name in names}
    out.update({name: why for why, names in NOT_SUPPORTED[command].items() for name in names})
    return out


@pytest.fixture(scope="module")
def parsers():
    parser, subparsers = build_parser()
    return parser, subparsers


def _value(config_cls, name: str) -> list[str]:
    fld = next(x for x in dataclasses.fields(config_cls) if x.name == name)
    kind, _ = field_kind(fld)
    return {"bool": ["true"], "int": ["2"], "float": ["0.5"], "dict": ["{}"], "list": ["a"]}.get(kind, ["x"])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_supported_trl_name_is_a_flag_of_the_command(parsers, command):
    from rlhfkit.cli import _config_classes

    parser, subparsers = parsers
    config_cls = _config_classes()[command]
    for name in supported(command):
        args, extras = parser.parse_known_args([command, f"--{name}", *_value(config_cls, name)])
        assert not extras and hasattr(args, name), f"rlhfkit {command} does not take --{name}"


@pytest.mark.parametrize("command", COMMANDS)
def test_unsupported_trl_names_are_refused_and_the_lists_do_not_overlap(parsers, command):
    _, subparsers = parsers
    flags = {opt for action in subparsers[command]._actions for opt in action.option_strings}  # noqa: SLF001
    refused = not_supported(command)
    assert not set(refused) & set(supported(command))
    assert len(supported(command)) == len(set(supported(command)))
    for name, why in refused.items():
        assert why.strip() and f"--{name}" not in flags, f"--{name} is listed as not supported but {command} takes it"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unsupported_trl_name_is_a_usage_error(command, capsys):
    from rlhfkit.cli import main

    name = next(iter(not_supported(command)))
    with pytest.raises(SystemExit) as exit_:
        main([command, f"--{name}", "1"])
    assert exit_.value.code == 2 and f"unknown flag --{name}" in capsys.readouterr().err


def test_the_lists_cover_every_trl_name_counted():
    # TRL 1.16 + Transformers 5.24: 163 names for sft, 153 reward, 167 dpo, 159 kto, 221 grpo, 195 rloo
    counts = {c: len(set(supported(c)) | set(not_supported(c))) for c in COMMANDS}
    assert counts == {"sft": 163, "reward": 153, "dpo": 167, "kto": 159, "grpo": 221, "rloo": 195}
