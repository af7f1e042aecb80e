"""Where models come from and where trained ones go: checked sources, LoRA, model cards, the Hub.

    check_model_source("runs/tiny", "--model_name_or_path")   # ModelSourceError before anything loads
    model = load_pretrained(AutoModelForCausalLM, "runs/sft", "--model_name_or_path", dtype="float32",
                            **hub_kwargs(config, "runs/sft", "model_name_or_path"),  # revision, remote code
                            **quantization_kwargs(config))             # load_in_4bit / 8bit (check_quantization first)
    model = apply_lora(model, config, task_type="CAUSAL_LM")    # when config.use_peft
    write_model_card("runs/sft", method="sft", config=config, metrics={...})
    push_folder("runs/sft", config.hub_model_id or "sft", private=config.hub_private_repo)  # HubError: the way out

A source is a local folder (it must hold ``config.json``, or ``adapter_config.json`` for a PEFT
adapter) or a hub id ``name`` / ``owner/name``. A name that looks like a path (``./x``,
``/x``, ``~/x``, ``a/b/c``, or ``a/b`` where the folder ``a`` exists here) never goes to the
Hub: the commonest mistake, a folder not made yet, gets "no such folder" and how to make one
instead of Transformers' "Repo id must be in the form ..." traceback. With
``HF_HUB_OFFLINE=1`` a hub id must already be in the local cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_one(name, kind: str = "causal-lm") -> str:
    """How to build the missing local model folder ``name``: train one, or write a tiny random one."""
    if kind == "reward":
        return (f"train one with `rlhfkit reward --output_dir {name} ...` or make a tiny random one with "
                f"`rlhfkit tiny-model --kind reward --output_dir {name}`")
    return (f"train one with `rlhfkit sft --output_dir {name} ...` or make a tiny random one with "
            f"`rlhfkit tiny-model --output_dir {name}`")


def offline_hint(name: str) -> str:
    """What to do when hub id ``name`` is not cached and the hub may not be contacted."""
    return (f"download it where the hub is reachable (`hf download {name} --local-dir <folder>`) and pass the "
            "folder, or unset HF_HUB_OFFLINE to download it")
# Never uploaded by push_folder: resumable training state, not the model.
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "ref_logps/**", "*.pt", "events.out.tfevents.*"]


class ModelSourceError(ValueError):
    """A model argument names nothing loadable; the message names the argument and the fix."""


class HubError(RuntimeError):
    """Pushing to the Hugging Face Hub failed; the message says what was kept locally."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def looks_local(name: str) -> bool:
    """True when ``name`` reads as a file-system path rather than a hub id (see the module docstring)."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    head, sep, _ = name.partition("/")
    return bool(sep) and Path(head).expanduser().is_dir()


def check_model_source(name, flag: str, kind: str = "causal-lm") -> None:
    """Raise ``ModelSourceError`` unless ``name`` is a model folder or a usable hub id; ``kind`` ('causal-lm' or
    'reward') picks the command suggested for a missing folder."""
    if not isinstance(name, (str, os.PathLike)) or not str(name).strip():
        raise ModelSourceError(f"{flag}: expected a model folder or hub id, got {name!r}")
    name = os.fspath(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / marker).is_file() for marker in ("config.json", "adapter_config.json")):
            raise ModelSourceError(f"{flag}: folder {name!r} is not a model folder (no config.json); point at a "
                                   "folder written by save_pretrained, e.g. the output_dir of `rlhfkit sft`")
        return
    if path.exists():
        raise ModelSourceError(f"{flag}: {name!r} is a file; expected a model folder (or a hub id)")
    if looks_local(name):
        raise ModelSourceError(f"{flag}: no such folder {name!r} ({make_one(name, kind)})")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelSourceError(f"{flag}: {name!r} is neither a local folder nor a valid hub id "
                               f"('owner/name'); {make_one(name, kind)}") from None
    if hub_offline() and not _cached(name):
        raise ModelSourceError(f"{flag}: no such folder {name!r} (looked in {Path.cwd()}), and HF_HUB_OFFLINE is set "
                               f"so the hub id {name!r} "
                               f"cannot be downloaded (it is not in the local cache); {offline_hint(name)}")


def _local_kind(name) -> tuple[str | None, str, int | None]:
    """(kind, architecture, labels) of a local model folder from its config.json (or a PEFT adapter's
    task type): kind is 'reward' (a sequence classifier), 'causal-lm', another head's name, or None
    where the folder does not say (a hub id, no architectures, unreadable JSON)."""
    import json

    path = Path(os.fspath(name)).expanduser()
    try:
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            archs = [str(a) for a in config.get("architectures") or []]
            labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels")
        elif (path / "adapter_config.json").is_file():
            task = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("task_type")
            archs, labels = [{"SEQ_CLS": "SequenceClassification adapter", "CAUSAL_LM": "CausalLM adapter"}
                             .get(task, f"{task} adapter")] if task else [], None
        else:
            return None, "", None
    except (OSError, ValueError, AttributeError, TypeError):
        return None, "", None
    if not archs:
        return None, "", labels
    arch = archs[0]
    if arch.endswith(("ForSequenceClassification", "SequenceClassification adapter")):
        return "reward", arch, labels
    if arch.endswith(("ForCausalLM", "LMHeadModel", "CausalLM adapter")):
        return "causal-lm", arch, labels
    return arch, arch, labels


def check_reward_model_source(name, flag: str) -> None:
    """:func:`check_model_source`, then, for a local folder, that it holds a reward model (a sequence
    classifier with one label) and not, say, the policy: Transformers would load a causal LM as a
    classifier with a new random head and no error."""
    check_model_source(name, flag, kind="reward")
    kind, arch, labels = _local_kind(name)
    if kind is not None and kind != "reward":
        what = "a causal language model" if kind == "causal-lm" else "a model"
        raise ModelSourceError(f"{flag}: {os.fspath(name)!r} is {what} ({arch}), not a reward model; give a folder "
                               "written by `rlhfkit reward` (AutoModelForSequenceClassification with one label)")
    if kind == "reward" and labels is not None and labels != 1:
        raise ModelSourceError(f"{flag}: {os.fspath(name)!r} is a classifier with {labels} labels; a reward model "
                               "has one (train it with `rlhfkit reward`)")


def check_policy_source(name, flag: str) -> None:
    """:func:`check_model_source`, then, for a local folder, that it is not a reward model (the commonest
    swap: the reward-model folder given as the policy)."""
    check_model_source(name, flag)
    kind, arch, _ = _local_kind(name)
    if kind == "reward":
        raise ModelSourceError(f"{flag}: {os.fspath(name)!r} is a reward model ({arch}), not a causal language "
                               "model; give the policy's folder (e.g. the output_dir of `rlhfkit sft`)")


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, marker), str)
               for marker in ("config.json", "adapter_config.json"))


def load_pretrained(auto_cls, name, flag: str, **kwargs):
    """``auto_cls.from_pretrained(name, **kwargs)`` after :func:`check_model_source`; load failures
    (a corrupt folder, an architecture this Transformers lacks, no network) name ``flag``."""
    check_model_source(name, flag)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return auto_cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        local = Path(name).expanduser().is_dir()
        hint = "" if local else f"; if {os.fspath(name)!r} is meant as a local folder, it does not exist " \
                                f"({make_one(os.fspath(name), 'reward' if 'Sequence' in auto_cls.__name__ else 'causal-lm')})"
        raise ModelSourceError(f"{flag}: could not load {os.fspath(name)!r} as {auto_cls.__name__} "
                               f"({type(err).__name__}: {first}){hint}") from err


def load_tokenizer(name, flag: str, **kwargs):
    """``AutoTokenizer.from_pretrained`` with the same checks and messages as :func:`load_pretrained`
    (``kwargs``: ``revision``, ``trust_remote_code``)."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer, name, flag, **kwargs)


def hub_kwargs(config, name, flag: str) -> dict:
    """``from_pretrained``'s ``revision`` and ``trust_remote_code`` from ``config`` for the source ``name``.

    A local folder has no revisions: a ``model_revision`` other than "main" warns there and is
    not passed (Transformers would ignore it without a word)."""
    import warnings

    kwargs = {"trust_remote_code": True} if getattr(config, "trust_remote_code", False) else {}
    revision = getattr(config, "model_revision", "main")
    if revision != "main":
        if isinstance(name, (str, os.PathLike)) and Path(os.fspath(name)).expanduser().is_dir():
            warnings.warn(f"{type(config).__name__}.model_revision={revision!r} has no effect: {flag} "
                          f"{os.fspath(name)!r} is a local folder, which has no revisions", UserWarning, stacklevel=3)
        else:
            kwargs["revision"] = revision
    return kwargs


def check_quantization(config) -> None:
    """``load_in_4bit`` / ``load_in_8bit`` need bitsandbytes and a CUDA GPU: say so before any model loads."""
    name = "load_in_4bit" if getattr(config, "load_in_4bit", False) else \
        "load_in_8bit" if getattr(config, "load_in_8bit", False) else None
    if name is None:
        return
    import importlib.util

    import torch

    try:
        installed = importlib.util.find_spec("bitsandbytes") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules
        installed = False
    if not installed:
        raise ModelSourceError(f"--{name}: quantized loading needs the bitsandbytes package, which is not installed "
                               f"(pip install bitsandbytes; it runs on CUDA GPUs); or drop --{name}")
    if not torch.cuda.is_available():
        raise ModelSourceError(f"--{name}: bitsandbytes quantization needs a CUDA GPU and none is available here; "
                               f"drop --{name} (LoRA then trains on the unquantized model)")


def quantization_kwargs(config) -> dict:
    """``from_pretrained`` keywords of a quantized load: a ``BitsAndBytesConfig`` and this process's GPU as
    the device map (as TRL's ``get_quantization_config`` / ``get_kbit_device_map``); {} when not quantized."""
    if not (getattr(config, "load_in_4bit", False) or getattr(config, "load_in_8bit", False)):
        return {}
    from transformers import BitsAndBytesConfig

    import torch

    compute = getattr(torch, config.dtype) if config.dtype not in (None, "auto") else torch.float32
    if config.load_in_4bit:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                                   bnb_4bit_quant_type=config.bnb_4bit_quant_type,
                                   bnb_4bit_use_double_quant=config.use_bnb_nested_quant)
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": int(os.environ.get("LOCAL_RANK", "0"))}}


def _names(value):
    """A comma-separated field as a list (None stays None)."""
    return None if value is None else [t.strip() for t in value.split(",") if t.strip()]


def lora_config(config, task_type: str):
    """A ``peft.LoraConfig`` from ``config``'s lora_* fields (comma-separated target modules or 'all-linear'),
    ``use_rslora`` and ``use_dora`` (fields a config lacks keep PEFT's defaults)."""
    from peft import LoraConfig

    targets = config.lora_target_modules
    if targets is not None and targets != "all-linear":
        targets = _names(targets)
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type=task_type,
                      modules_to_save=_names(getattr(config, "lora_modules_to_save", None)),
                      use_rslora=getattr(config, "use_rslora", False), use_dora=getattr(config, "use_dora", False))


def apply_lora(model, config, task_type: str):
    """Wrap ``model`` with LoRA adapters from ``config``'s lora_* fields (``task_type``: CAUSAL_LM or SEQ_CLS).

    Under gradient checkpointing the input embeddings are made to require grad, or a frozen
    base would leave nothing to backpropagate through the checkpointed blocks. A quantized
    base (``load_in_4bit`` / ``load_in_8bit``) is first made ready for k-bit training (PEFT's
    ``prepare_model_for_kbit_training``: norms in float32, inputs that require grad).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    lora = lora_config(config, task_type)
    names = [n for n, _ in model.named_modules()]
    missing = [key for key in lora.modules_to_save or () if not any(n == key or n.endswith("." + key) for n in names)]
    if missing:  # PEFT would go on without them, training nothing more
        raise ModelSourceError(f"--lora_modules_to_save: no module of the model is named {', '.join(missing)} (its "
                               f"top-level modules: {', '.join(n for n in names if n and '.' not in n)})")
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    try:
        model = get_peft_model(model, lora)
    except ValueError as err:  # PEFT: target modules not found / no default for this architecture
        raise ModelSourceError(f"--lora_target_modules: {err}") from None
    if config.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def write_model_card(output_dir, *, method: str, config, metrics: dict | None = None) -> Path:
    """``output_dir/README.md``: Hub metadata (front matter) plus how the model was trained and how to load it."""
    from .. import __version__

    out = Path(output_dir)
    peft = bool(getattr(config, "use_peft", False))
    auto = "AutoModelForSequenceClassification" if method == "reward" else "AutoModelForCausalLM"
    tags = ["rlhfkit", {"sft": "sft", "reward": "reward-model", "dpo": "dpo"}.get(method, method)]
    if getattr(config, "loss_type", None) not in (None, "sigmoid"):
        tags.append(config.loss_type)
    front = {"library_name": "peft" if peft else "transformers", "tags": tags}
    if config.model_name_or_path:
        front["base_model"] = str(config.model_name_or_path)
    if config.dataset_name and not looks_local(str(config.dataset_name)) and not Path(config.dataset_name).exists():
        front["datasets"] = [str(config.dataset_name)]
    load = (f"from peft import AutoPeftModelFor{'SequenceClassification' if method == 'reward' else 'CausalLM'}"
            f"\nmodel = AutoPeftModelFor{'SequenceClassification' if method == 'reward' else 'CausalLM'}"
            f".from_pretrained(\"{out.name}\")") if peft else \
        f"from transformers import {auto}\nmodel = {auto}.from_pretrained(\"{out.name}\")"
    if method == "reward":
        load += "\n\nfrom rlhfkit import RewardModel  # scores texts exactly as training tokenized them\n" \
                f"rm = RewardModel(\"{out.name}\")\nrm([\"prompt\"], [\"response\"])"
    keys = ("run_name", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "gradient_accumulation_steps", "max_length", "beta", "loss_type", "teacher_model_name_or_path", "lmbda",
            "temperature", "lora_r", "lora_alpha", "seed")
    rows = [f"| {k} | {getattr(config, k)} |" for k in keys if hasattr(config, k)
            and (k not in ("lora_r", "lora_alpha") or peft) and (k != "run_name" or config.run_name)]
    body = [f"# {out.name}", "", f"Trained with rlhfkit {__version__} (`rlhfkit {method}`) "
            f"from `{config.model_name_or_path}` on `{config.dataset_name}`"
            + (" as a LoRA adapter." if peft else "."), "", "## Load it", "", "```python", load, "```", "",
            "## Training", "", "| setting | value |", "| --- | --- |", *rows, ""]
    if metrics:
        body += ["## Final metrics", "", "| metric | value |", "| --- | --- |",
                 *[f"| {k} | {v:.6g} |" for k, v in metrics.items() if isinstance(v, (int, float))], ""]
    body += ["The full resolved config is in `config.yaml` (when trained from the CLI)."]
    import yaml

    text = "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(text)
    return out / "README.md"


def check_push(config) -> None:
    """Before training: ``push_to_hub`` cannot work offline (say so now, not after hours of training)."""
    if getattr(config, "push_to_hub", False) and hub_offline():
        raise ModelSourceError("--push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset "
                               "HF_HUB_OFFLINE (and log in with `hf auth login`) or drop --push_to_hub")


def push_folder(folder, repo_id: str, private: bool | None = None) -> str:
    """Upload ``folder`` (without checkpoints) to the hub repo ``repo_id``; returns the repo URL."""
    check_push(type("C", (), {"push_to_hub": True})())
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=str(url.repo_id), ignore_patterns=PUSH_IGNORE,
                          commit_message="Upload with rlhfkit")
    except Exception as err:  # noqa: BLE001 - network, auth and permission failures all end here
        raise HubError(f"--push_to_hub: could not upload {folder} to {repo_id!r} ({type(err).__name__}: "
                       f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); the trained model is "
                       f"saved in {folder}; log in with `hf auth login` and upload it later with "
                       f"`hf upload {repo_id} {folder}`") from err
    return str(url)
