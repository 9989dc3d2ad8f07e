"""latentguard installs as one import name beside the usual ML stack, and what it shipped still loads."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment holding the built wheel and Hugging Face's ``evaluate`` (with its own
    dependencies); latentguard's dependencies (torch, transformers ...) are read from this project's
    environment through a ``.pth`` line, so that they are not installed twice."""
    tmp = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ROOT, "-w", tmp / "dist")
    (wheel,) = (tmp / "dist").glob("latentguard-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz-project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt", "evaluate")
    return venv


def test_evaluate_stays_hugging_faces_and_latentguard_imports(fresh_venv):
    # run outside the clone: from its root, `import evaluate` finds the evaluate.py script first
    out = run(fresh_venv / "bin" / "python", "-c",
              "import evaluate, latentguard, gymnasium as gym; "
              "print(evaluate.__file__); print(evaluate.load.__module__); print(latentguard.__file__); "
              "print(latentguard.__version__, latentguard.DECISION_ID in gym.registry)", cwd=fresh_venv).splitlines()
    assert out[0].startswith(str(fresh_venv)) and out[0].endswith("evaluate/__init__.py")
    assert out[1].startswith("evaluate.")  # Hugging Face's evaluate.load, not our CLI
    assert out[2].startswith(str(fresh_venv)) and out[3] == "0.2.0 True"


def test_the_wheel_installs_nothing_but_latentguard_at_the_top_level(fresh_venv):
    site = next((fresh_venv / "lib").glob("python3*/site-packages"))
    (dist_info,) = site.glob("latentguard-*.dist-info")
    tops = {line.split(",")[0].split("/")[0] for line in (dist_info / "RECORD").read_text().splitlines() if line}
    scripts = {line.split(",")[0] for line in (dist_info / "RECORD").read_text().splitlines() if "/bin/" in line}
    assert tops == {"latentguard", dist_info.name, ".."}
    assert {Path(s).name for s in scripts} == {"latentguard-train", "latentguard-evaluate", "latentguard-serve"}
    entry = (dist_info / "entry_points.txt").read_text()
    assert "latentguard-train = latentguard.cli.train:main" in entry


def test_the_console_scripts_run(fresh_venv):
    assert "--methods" in run(fresh_venv / "bin" / "latentguard-evaluate", "--help")
    assert "policy" in run(fresh_venv / "bin" / "latentguard-train", "--help")
    assert "--max-queue" in run(fresh_venv / "bin" / "latentguard-serve", "--help")  # no server package needed


def test_the_wheel_carries_the_shipped_files(fresh_venv):
    package = next((fresh_venv / "lib").glob("python3*/site-packages/latentguard"))
    for path in ("py.typed", "agents/pretrained/smollm2-135m-instruct/policy.zip",
                 "critics/pretrained/smollm2-135m-instruct/critic.safetensors",
                 "guards/pretrained/smollm2-135m-instruct/latent-probe.json", "data/harm_prompts.jsonl",
                 "evaluation/data/gold/gold.jsonl", "evaluation/data/judges.json"):
        assert (package / path).is_file(), path


def test_a_policy_saved_by_version_0_1_loads_under_the_new_class_paths():
    """The shipped policy was saved when the package's modules were top-level (``envs.policy_features``)."""
    from latentguard.agents.policy_features import LatentStateExtractor
    from latentguard.agents.policy_io import legacy_objects, load_policy
    from latentguard.agents.pretrained import pretrained_policy_dir

    zip_path = pretrained_policy_dir("smollm2-135m-instruct") / "policy.zip"
    kwargs = legacy_objects(zip_path)["policy_kwargs"]  # only entries that name a 0.1 module path are here
    assert kwargs["features_extractor_class"] is LatentStateExtractor
    model = load_policy(zip_path, device="cpu")
    assert isinstance(model.policy.features_extractor, LatentStateExtractor)
    assert "envs" not in sys.modules  # nothing was imported under the old top-level name
