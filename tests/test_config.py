"""Every option of every config group composes, resolves and takes effect (the experiment=glob(*) idea)."""

from enum import Enum

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from helpers import CONFIG_GROUPS, PROJECT_ROOT, compose_task

OPTIONS = [
    f"{group}={path.stem}"
    for group in CONFIG_GROUPS
    for path in sorted((PROJECT_ROOT / "conf" / group).glob("*.yaml"))
]


def own_settings(group: str, name: str) -> dict[tuple[str, ...], object]:
    """The values an option's file sets, by their full path of keys (its ``@package`` line, else its
    group; a key may hold a dot, as a sweeper's ``params`` do), less its defaults list."""
    path = PROJECT_ROOT / "conf" / group / f"{name}.yaml"
    package = next(
        (line.split()[-1] for line in path.read_text().splitlines() if line.startswith("# @package")), group
    )
    prefix = () if package == "_global_" else tuple(package.split("."))
    flat: dict[tuple[str, ...], object] = {}

    def walk(node, keys: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for child, value in node.items():
                walk(value, (*keys, child))
        else:
            flat[keys] = node

    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(own, dict)
    walk({k: v for k, v in own.items() if k != "defaults"}, prefix)
    return flat


def composed(node: dict, keys: tuple[str, ...]) -> object:
    """The value at ``keys`` as a config file writes it (Hydra turns ``mode: MULTIRUN`` into an enum)."""
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None  # type: ignore[assignment]
    return node.name if isinstance(node, Enum) else node


@pytest.mark.parametrize("option", OPTIONS)
def test_every_config_option_composes_resolves_and_takes_effect(option, tmp_path):
    cfg = compose_task("train", tmp_path, option)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict) and resolved["paths"]["output_dir"] == str(tmp_path)
    # the task's config has no Hydra node; Hydra's own config is kept apart
    everything = {**resolved, "hydra": OmegaConf.to_container(HydraConfig.get(), resolve=False)}
    group, name = option.split("=")
    for keys, value in own_settings(group, name).items():
        if value is None or (isinstance(value, str) and "${" in value):
            continue  # null: a place another group fills; an interpolation: resolved above
        assert composed(everything, keys) == value, ".".join(keys)


def test_the_eval_config_composes_and_resolves(tmp_path):
    cfg = compose_task("eval", tmp_path, "ckpt_path=some.ckpt", "eval.class_map={abnormal: yes}")
    assert OmegaConf.to_container(cfg, resolve=True)["data"]["class_map"] == {"abnormal": "yes"}
