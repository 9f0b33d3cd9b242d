"""Every option of every config group composes and resolves (the experiment=glob(*) idea)."""

import pytest
from omegaconf import OmegaConf

from helpers import PROJECT_ROOT, compose_task

GROUPS = ("data", "model", "trainer", "callbacks", "logger", "paths", "experiment", "hparams_search", "debug")
OPTIONS = [
    f"{group}={path.stem}"
    for group in GROUPS
    for path in sorted((PROJECT_ROOT / "conf" / group).glob("*.yaml"))
]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_config_option_composes_and_resolves(option, tmp_path):
    cfg = compose_task("train", tmp_path, option)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] == str(tmp_path)


def test_the_eval_config_composes_and_resolves(tmp_path):
    cfg = compose_task("eval", tmp_path, "ckpt_path=some.ckpt", "eval.class_map={abnormal: yes}")
    assert OmegaConf.to_container(cfg, resolve=True)["data"]["class_map"] == {"abnormal": "yes"}
