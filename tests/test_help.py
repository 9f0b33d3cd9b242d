"""What the commands print when asked: each task's --help shows its usage and its own settings, not the
config groups of training or the internal ones; ``jupyter lab`` (for notebooks/) is installed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CONFIG_GROUPS, PROJECT_ROOT, check

# the schemas of brain_mri/config/settings.py, the model configs' shared part, training's groups and callbacks
INTERNAL_OR_TRAINING = (
    "schema",
    "_defaults",
    "== Configuration groups ==",
    "hparams_search",
    "early_stopping",
)


SCRIPTS = ("train.py", "eval.py", "predict.py", "export.py")
# Every script's --help in one Python process, as each prints it: one interpreter start, not four
EVERY_HELP = """
import runpy, sys
from hydra.core.global_hydra import GlobalHydra
for script in sys.argv[1:]:
    print(f"=== {script} ===", flush=True)
    sys.argv = [script, "--help"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
    GlobalHydra.instance().clear()
"""


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    shown = check(
        subprocess.run(
            [sys.executable, "-c", EVERY_HELP, *SCRIPTS], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
    ).stdout
    parts = re.split(r"^=== (\S+) ===$", shown, flags=re.M)[1:]
    return dict(zip(parts[::2], parts[1::2], strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "own_settings"),
    [
        ("eval.py", ("ckpt_path: ???", "tta: none", "class_map: null", "precision: null")),
        ("predict.py", ("ckpt_path: ???", "input: ???", "explain: false", "chunk_size: 256")),
        ("export.py", ("ckpt_path: ???", "format: onnx", "output: null")),
    ],
)
def test_a_tasks_help_shows_its_usage_and_own_settings_only(helps, script, own_settings):
    shown = helps[script]
    assert f"Usage: python {script} ckpt_path=" in shown
    assert all(setting in shown for setting in own_settings)
    assert not [name for name in INTERNAL_OR_TRAINING if name in shown]


@pytest.mark.slow
def test_trains_help_lists_every_option_of_its_groups_and_no_internal_one(helps):
    shown = helps["train.py"]
    assert "Usage: python train.py" in shown and "seed: 42" in shown
    assert "schema" not in shown and "_defaults" not in shown
    groups = shown.split("== Config (")[0]
    listed = dict(re.findall(r"^(\w+): ([\w, ]+?)\s*(?:\(|$)", groups, re.M))
    for group in [g for g in CONFIG_GROUPS if g not in ("callbacks", "paths")]:  # not picked as options
        options = {
            p.stem for p in (PROJECT_ROOT / "conf" / group).glob("*.yaml") if not p.stem.startswith("_")
        }
        assert set(listed[group].split(", ")) == options, f"conf/hydra/help/train.yaml lists {group}"


def test_the_notebook_extra_installs_jupyter_lab_which_the_readme_runs():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    extras = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [r for r in extras["notebook"] if re.match(r"jupyterlab\b", r)]
    jupyter = Path(sys.executable).with_name("jupyter")
    version = subprocess.run([jupyter, "lab", "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0, "pip install -e '.[notebook]' installs jupyterlab"
