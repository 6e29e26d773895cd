import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "ee_jax", "tests", "bench", "setup.py"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_pickle_in_package():
    for dirpath, _, files in os.walk(os.path.join(ROOT, "ee_jax")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                    text = f.read()
                assert "import pickle" not in text and "pickle.load" not in text, name


def test_public_api_resolves():
    import ee_jax

    for name in ee_jax.__all__:
        assert getattr(ee_jax, name) is not None, name
