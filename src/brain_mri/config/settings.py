"""Settings checked before any work: typed schemas that Hydra checks when it composes the config, and the
ranges and memory needs it cannot know, checked before the run folder is written."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from brain_mri.cluster import slurm_job
from brain_mri.errors import BrainMRIError, user_error
from brain_mri.runs.checkpoints import load_checkpoint
from brain_mri.runs.files import best_checkpoints, one_checkpoint
from brain_mri.runs.resume import (
    check_epochs_left,
    check_full_state,
    check_restored_settings,
    check_run_folder,
    check_schedule_length,
    checkpoint_folder_message,
)

# What Hydra can check when it composes a config (``data.batch_size=abc`` is refused with the key's name);
# a setting of any other type (a list, a policy object) is taken as it is and checked by its constructor.
CHECKED_TYPES = {int, float, bool, str}


def schema_from(
    function: Any, target: str, filled_by_the_task: tuple[str, ...] = (), types: dict[str, Any] | None = None
) -> type:
    """The config schema of ``function``'s settings, derived from its signature, so that each setting is
    declared once, with its type and default, where it is used: a required argument is ``???`` in the
    config, and ``filled_by_the_task`` are left out (the task passes them, e.g. the data's class names).
    The type Hydra checks is the argument's own where it is a plain one, or ``types``'s (any other: Any)."""
    hints = get_type_hints(function) if types is None else {}
    fields: list[Any] = [("_target_", str, field(default=target))]
    for name, parameter in inspect.signature(function).parameters.items():
        if name == "self" or name in filled_by_the_task:
            continue
        hint = hints.get(name, Any)
        members = set(get_args(hint)) - {type(None)} if get_args(hint) else {hint}
        checked = hint if members <= CHECKED_TYPES and len(members) == 1 else Any
        if types is not None:
            checked = types.get(name, Any)
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        fields.append((name, checked, field(default=default)))
    return make_dataclass(f"{getattr(function, '__qualname__', target).split('.')[0]}Settings", fields)


@dataclass
class EvalSettings:
    """The ``eval`` node of conf/eval.yaml."""

    on: str = "test"
    tta: str = "none"
    class_map: Any = None  # {folder: class}; untyped, since a typed dict refuses new keys
    boxes: Any = None  # a file of boxes (path); untyped, so a path is taken as it is written
    box_tolerance: float = 2.0
    explain: str = "guided_grad_cam"
    occlude: Any = None  # null or "boxes"
    gallery_images: int = 64


# Trainer arguments with a type Hydra checks when it composes (``trainer.max_epochs=abc`` is refused with
# the key's name); every other argument of Lightning's Trainer is allowed with any value.
TRAINER_TYPES: dict[str, Any] = {
    "num_nodes": int,
    "max_epochs": int | None,
    "min_epochs": int | None,
    "max_steps": int,
    "min_steps": int | None,
    "check_val_every_n_epoch": int | None,
    "log_every_n_steps": int | None,
    "num_sanity_val_steps": int | None,
    "accumulate_grad_batches": int,
    "gradient_clip_val": float | None,
    "use_distributed_sampler": bool,
    "benchmark": bool | None,
    "inference_mode": bool,
    "sync_batchnorm": bool,
    "reload_dataloaders_every_n_epochs": int,
    "enable_checkpointing": bool | None,
    "enable_progress_bar": bool | None,
    "enable_model_summary": bool | None,
}


def trainer_settings() -> type:
    """A schema with every argument of Lightning's Trainer, at Lightning's own default."""
    from lightning.pytorch import Trainer

    return schema_from(Trainer.__init__, "lightning.pytorch.Trainer", types=TRAINER_TYPES)


# Arguments the tasks fill in, never set in a config: the data's classes, and the model's input contract
IN_TASK_DATA = ("class_map",)  # set by evaluation from a checkpoint's classes
IN_TASK_MODEL = ("num_classes", "class_names", "image_size", "crop")
IN_TASK_EVAL_DATA = ("trained", "class_names", "image_size", "crop")


def register_schemas() -> None:
    """Put the schemas where the config files name them (``defaults: [/schema/<name>@_here_, ...]``)."""
    from brain_mri.data import BrainMRIDataModule
    from brain_mri.data.evaluation import evaluation_data
    from brain_mri.models import BrainMRIClassifier

    store = ConfigStore.instance()
    for name, node in (
        ("data", schema_from(BrainMRIDataModule.__init__, "brain_mri.data.BrainMRIDataModule", IN_TASK_DATA)),
        (
            "model",
            schema_from(BrainMRIClassifier.__init__, "brain_mri.models.BrainMRIClassifier", IN_TASK_MODEL),
        ),
        ("eval", EvalSettings),
        (
            "eval_data",
            schema_from(evaluation_data, "brain_mri.data.evaluation.evaluation_data", IN_TASK_EVAL_DATA),
        ),
        ("trainer", trainer_settings()),
    ):
        store.store(group="schema", name=name, node=node)


def available_memory(accelerator: str) -> int:
    """Bytes free where training runs: on the GPU when it is used, else the machine's available memory
    (on any operating system)."""
    import psutil

    from brain_mri.hardware import uses_cuda

    if uses_cuda(accelerator) and torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    return psutil.virtual_memory().available


def output_shapes(arch: str, image_size: int, pick: Callable[[torch.nn.Module], list[torch.nn.Module]]):
    """The output shapes of the modules ``pick(net)`` chooses, in the order they run, from one forward
    pass of ``arch`` on the meta device (no memory, no time)."""
    from brain_mri.models.backbones import build_backbone

    with torch.device("meta"):
        net = build_backbone(arch, 2).eval()  # eval: batch norm takes a batch of one
    modules = pick(net)  # before any hook: a name that is not there raises here
    shapes: list[tuple[int, ...]] = []

    def record(module, inputs, output) -> None:
        if isinstance(output, torch.Tensor):
            shapes.append(tuple(output.shape))

    hooks = [module.register_forward_hook(record) for module in modules]
    with torch.no_grad():
        net(torch.empty(1, 3, image_size, image_size, device="meta"))
    for hook in hooks:
        hook.remove()
    return shapes


def activations_per_image(arch: str, image_size: int) -> int:
    """Output elements of every layer for one image."""
    leaves = output_shapes(arch, image_size, lambda net: [m for m in net.modules() if not list(m.children())])
    return sum(math.prod(shape) for shape in leaves)


def cam_layer_problem(arch: str, layer: str, image_size: int) -> str | None:
    """Why ``model.cam_layer`` cannot serve Grad-CAM (no such module, or its output is no feature map at
    this image size), found before training rather than when the run is tested."""
    try:
        (shape,) = output_shapes(arch, image_size, lambda net: [net.get_submodule(layer)])
    except AttributeError:
        return f"model.cam_layer={layer}: {arch} has no such module."
    if len(shape) != 4:
        return (
            f"model.cam_layer={layer}: its output is not a feature map (N, C, H, W) but {shape}; "
            "Grad-CAM needs a convolutional layer."
        )
    return None


def training_memory(arch: str, image_size: int, batch_size: int, files: int) -> tuple[int, int]:
    """(bytes of the decoded images, bytes of one training batch): the batch as float, 3 channels, with
    every layer's activations kept for the backward pass and a gradient of the same size (fp32)."""
    decoded = files * image_size * image_size
    per_image = 3 * image_size * image_size + activations_per_image(arch, image_size)
    return decoded, 2 * 4 * per_image * batch_size


def check_initial_weights(checkpoint: dict, path: str, model: DictConfig) -> None:
    """``init_from=`` copies weights into the network this run builds: the same architecture, and no
    pretrained weights of its own that would be overwritten."""
    saved = checkpoint["hyper_parameters"]["arch"]
    if saved != model.arch:
        raise BrainMRIError(
            f"init_from={path} holds a {saved}, but this run builds a {model.arch}: set model={saved}, "
            f"or start from a {model.arch} checkpoint."
        )
    if model.get("weights") or model.get("weights_path"):
        raise BrainMRIError(
            f"init_from={path} replaces the network's weights: drop model.weights / model.weights_path."
        )


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def slurm_job_problems(num_nodes: Any, devices: Any) -> list[str]:
    """Inside a Slurm job, the nodes and processes of a training run must be the job's: more nodes than
    it holds would wait for ever, and Lightning takes one process per device from Slurm's tasks."""
    job = slurm_job()
    if job is None:
        return []
    problems = []
    if is_whole(num_nodes) and num_nodes > job.nodes:
        problems.append(
            f"trainer.num_nodes={num_nodes} but this Slurm job holds {job.nodes} node"
            f"{'s' if job.nodes > 1 else ''}: ask for them (sbatch --nodes={num_nodes}) or set "
            f"trainer.num_nodes={job.nodes}; Lightning would wait for ever."
        )
    if job.tasks_per_node and is_whole(devices) and devices != job.tasks_per_node:
        problems.append(
            f"trainer.devices={devices} but Slurm starts {job.tasks_per_node} tasks per node "
            f"(--ntasks-per-node), one process per device: set trainer.devices={job.tasks_per_node}, or ask "
            f"sbatch for --ntasks-per-node={devices}."
        )
    return problems


def check_train_settings(cfg: DictConfig) -> None:
    """Every range problem of a training config in one message, before any data is read or folder written
    (the model and data module check their own arguments; building the data module reads nothing)."""
    import hydra

    from brain_mri.models.classifier import model_setting_problems

    model, trainer = cfg.model, cfg.trainer
    problems = model_setting_problems(**OmegaConf.to_container(model, resolve=True))  # type: ignore[arg-type]
    max_epochs = trainer.get("max_epochs")
    if not is_whole(max_epochs) or max_epochs < 1:
        problems.append(f"trainer.max_epochs must be a whole number of at least 1, got {max_epochs}.")
    freeze = model.get("freeze_backbone_epochs", 0)
    if is_whole(freeze) and is_whole(max_epochs) and freeze >= max_epochs >= 1:
        problems.append(
            f"model.freeze_backbone_epochs={freeze} with trainer.max_epochs={max_epochs}: the backbone would "
            "never train."
        )
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not clip > 0:
        problems.append(
            f"trainer.gradient_clip_val must be greater than 0 (or null: no clipping), got {clip}."
        )
    for key in ("seed", "data.split_seed", "callbacks.early_stopping.patience", "gallery_images"):
        value = OmegaConf.select(cfg, key, default=0)  # no early stopping: no patience to check
        if not is_whole(value) or value < 0:
            problems.append(f"{key} must be a whole number of 0 or more, got {value!r}.")
    problems += slurm_job_problems(trainer.get("num_nodes") or 1, trainer.get("devices"))
    try:
        starts = [f"{key}={cfg[key]}" for key in ("resume", "ckpt_path", "init_from") if cfg.get(key)]
        if len(starts) > 1:
            raise BrainMRIError(
                f"{' and '.join(starts)}: set one. resume= continues a run in its folder, ckpt_path= its "
                "training in a new folder, init_from= starts a new training from a checkpoint's weights."
            )
        if cfg.get("resume"):
            check_run_folder(Path(cfg.resume))
        elif cfg.get("ckpt_path") and Path(cfg.ckpt_path).is_dir():
            raise BrainMRIError(checkpoint_folder_message(Path(cfg.ckpt_path)))
        elif cfg.get("ckpt_path") and is_whole(max_epochs):  # a bad file or nothing left to train: now
            checkpoint = load_checkpoint(cfg.ckpt_path)
            check_full_state(checkpoint, str(cfg.ckpt_path))
            check_epochs_left(checkpoint["epoch"] + 1, max_epochs)
            check_schedule_length(checkpoint, str(cfg.ckpt_path), max_epochs)
            check_restored_settings(checkpoint, str(cfg.ckpt_path), model)
        elif cfg.get("init_from"):
            initial = one_checkpoint(cfg.init_from)  # a run folder: its best checkpoint
            check_initial_weights(load_checkpoint(initial), str(initial), model)
    except BrainMRIError as err:
        problems.append(str(err))
    try:
        files = hydra.utils.instantiate(cfg.data).check_layout()  # its layout now, before any decoding
    except Exception as caught:
        user_facing = user_error(caught)
        if user_facing is None:
            raise
        problems.append(str(user_facing))
    if not problems:
        problems += memory_problems(model.arch, cfg.data, str(trainer.get("accelerator", "auto")), files)
        layer = model.get("cam_layer")
        problem = cam_layer_problem(model.arch, layer, cfg.data.image_size) if layer else None
        problems += [problem] if problem else []
    if problems:
        raise BrainMRIError("\n".join(problems))


def memory_problems(arch: str, data: Any, accelerator: str, files: int) -> list[str]:
    """Whether the decoded images plus one training batch fit in the memory free now; estimated, said."""
    free = available_memory(accelerator)
    largest = min(data.batch_size, max(files, 1))  # no batch holds more images than the data set
    decoded, batch = training_memory(arch, data.image_size, largest, files)
    if decoded + batch <= free:
        return []
    gib = 1024**3
    return [
        f"data.image_size={data.image_size} with data.batch_size={data.batch_size} needs about "
        f"{decoded / gib:.1f} GiB for the decoded images and {batch / gib:.1f} GiB for one training batch "
        f"of {largest} images of {arch}, but {free / gib:.1f} GiB are free. Use a smaller image size or "
        "batch size."
    ]


def check_given(cfg: DictConfig, keys: tuple[str, ...], script: str, section: str) -> None:
    """Paths a task cannot start without: left out, null or empty, they are named in one message."""
    missing = [f"{key}=<...>" for key in keys if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, "")]
    if missing:
        raise BrainMRIError(f"{script} needs {' and '.join(missing)} (see docs/evaluation.md: {section}).")


ALL_NEEDS_A_ROOT = (
    "eval.on=all tests every image of a folder: name it with data.root=<folder>. (The data root a "
    "checkpoint remembers is read only through its run's split, whose hashes are checked.)"
)


def check_eval_settings(cfg: DictConfig) -> None:
    from brain_mri.models.ensemble import VIEWS
    from brain_mri.models.explain import METHODS

    if cfg.eval.on not in ("test", "all"):
        raise BrainMRIError(f"eval.on must be 'test' or 'all', got '{cfg.eval.on}'.")
    check_given(cfg, ("ckpt_path",), "eval.py", "Evaluating and reloading a checkpoint")
    if cfg.eval.on == "all" and not cfg.data.get("root"):
        raise BrainMRIError(ALL_NEEDS_A_ROOT)
    if cfg.eval.tta not in VIEWS:
        raise BrainMRIError(f"eval.tta must be one of {', '.join(VIEWS)}, got '{cfg.eval.tta}'.")
    if cfg.eval.explain not in METHODS:
        raise BrainMRIError(f"eval.explain must be one of {', '.join(METHODS)}, got '{cfg.eval.explain}'.")
    if cfg.eval.occlude not in (None, "boxes"):
        raise BrainMRIError(f"eval.occlude must be null or boxes, got '{cfg.eval.occlude}'.")
    if cfg.eval.occlude and not cfg.eval.boxes:
        raise BrainMRIError("eval.occlude=boxes hides each image's box: give them with eval.boxes=<csv>.")
    if cfg.eval.boxes is not None and not Path(str(cfg.eval.boxes)).is_file():
        what = "a folder, not a file" if Path(str(cfg.eval.boxes)).is_dir() else "no such file"
        raise BrainMRIError(f"eval.boxes={cfg.eval.boxes}: {what}.")
    if not cfg.eval.box_tolerance >= 0:
        raise BrainMRIError(f"eval.box_tolerance must be 0 or more pixels, got {cfg.eval.box_tolerance}.")
    if cfg.eval.gallery_images < 0:
        raise BrainMRIError(f"eval.gallery_images must be 0 or more, got {cfg.eval.gallery_images}.")
    best_checkpoints(cfg.ckpt_path)  # each file there, or one message


def check_predict_settings(cfg: DictConfig) -> None:
    from brain_mri.models.ensemble import VIEWS
    from brain_mri.models.explain import METHODS

    check_given(cfg, ("ckpt_path", "input"), "predict.py", "Predicting new scans")
    problems = []
    if cfg.tta not in VIEWS:
        problems.append(f"tta must be one of {', '.join(VIEWS)}, got '{cfg.tta}'.")
    if cfg.device not in ("cpu", "cuda", "auto"):
        problems.append(f"device must be cpu, cuda or auto, got '{cfg.device}'.")
    elif cfg.device == "cuda" and not torch.cuda.is_available():
        problems.append("device=cuda, but PyTorch sees no CUDA GPU here: predict with device=cpu (or auto).")
    if not isinstance(cfg.explain, bool) and cfg.explain not in METHODS:
        problems.append(
            f"explain must be true, false or an explanation method ({', '.join(METHODS)}), "
            f"got '{cfg.explain}'."
        )
    elif cfg.cam_layer and not cfg.explain:
        problems.append(f"cam_layer={cfg.cam_layer} chooses Grad-CAM's layer: add explain=true, or drop it.")
    for key in ("batch_size", "chunk_size", "min_image_size"):
        if not is_whole(cfg[key]) or cfg[key] < 1:
            problems.append(f"{key} must be a whole number of at least 1, got {cfg[key]}.")
    if not Path(str(cfg.input)).expanduser().exists():
        problems.append(f"input={cfg.input}: no such file or folder.")
    refuse_all(problems + problem_of(best_checkpoints, cfg.ckpt_path))


EXPORT_FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # export.py format=...: the file's extension


def check_export_settings(cfg: DictConfig) -> None:
    check_given(cfg, ("ckpt_path",), "export.py", "Export (ONNX, TorchScript)")
    problems = []
    if cfg.format not in EXPORT_FORMATS:
        problems.append(f"format must be one of {', '.join(EXPORT_FORMATS)}, got '{cfg.format}'.")
    refuse_all(problems + problem_of(one_checkpoint, cfg.ckpt_path))


def problem_of(check: Callable[..., object], *args: Any) -> list[str]:
    """What ``check(*args)`` refuses, as a list to add to the others (empty when it passes)."""
    try:
        check(*args)
    except BrainMRIError as err:
        return [str(err)]
    return []


def refuse_all(problems: list[str]) -> None:
    """Every problem found, in one message."""
    if problems:
        raise BrainMRIError("\n".join(problems))
