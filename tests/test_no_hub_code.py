"""Importing the project turns off every Hub lookup of code: bitsandbytes' kernel lookup
never reaches ``kernels.get_kernel``, and nothing tells the user to trust remote code.

The probe is a stand-in ``kernels`` package first on ``sys.path`` whose ``get_kernel``
records that it was called, in a fresh interpreter per case (the lookup happens once, when
bitsandbytes is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

IMPORTS = "import transformers, peft, bitsandbytes"
PROBE = '''
import json, os, sys
def get_kernel(repo_id, **kwargs):
    with open(os.environ["KERNEL_CALLS"], "a") as calls:
        calls.write(json.dumps(repo_id) + "\\n")
    raise RuntimeError("the stand-in kernels package loads nothing")
'''


def import_in_fresh_process(tmp_path: Path, code: str) -> tuple[list[str], str]:
    """(the repos ``get_kernel`` was asked for, stderr) of ``python -c code``."""
    (tmp_path / "kernels").mkdir(exist_ok=True)
    (tmp_path / "kernels" / "__init__.py").write_text(PROBE)
    calls = tmp_path / "calls.jsonl"
    calls.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
           "KERNEL_CALLS": str(calls)}
    env.pop("HF_HUB_OFFLINE", None)  # the project must set it itself
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    asked = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return asked, done.stderr


def cpu_has_avx512_bf16() -> bool:
    """bitsandbytes looks up its Hub kernel only on such CPUs."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def test_the_project_makes_no_hub_kernel_lookup(tmp_path):
    code = ("import logging; logging.basicConfig(); import so8t_kedro, os; " + IMPORTS
            + "; print(os.environ['HF_HUB_OFFLINE'], os.environ['USE_HUB_KERNELS'])")
    asked, stderr = import_in_fresh_process(tmp_path, code)
    assert asked == []
    assert "kernels-community" not in stderr and "trust_remote_code" not in stderr


def test_without_the_project_bitsandbytes_asks_the_hub_on_this_cpu(tmp_path):
    """The control: the stand-in does record a lookup where bitsandbytes makes one."""
    if not cpu_has_avx512_bf16():
        pytest.skip("bitsandbytes makes no Hub lookup on a CPU without AVX512-BF16")
    asked, _ = import_in_fresh_process(tmp_path, "import bitsandbytes")
    assert asked == ["kernels-community/quantization-bitsandbytes"]


def test_the_project_respects_an_explicit_hub_setting(tmp_path):
    code = "import os; os.environ['HF_HUB_OFFLINE'] = '0'; import so8t_kedro; " \
           "print(os.environ['HF_HUB_OFFLINE'])"
    env_code = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True)
    assert env_code.stdout.strip() == "0"
