"""`compressctl --help` and `validate` must not import torch or onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_cli_import_leaves_heavy_libraries_out() -> None:
    code = (
        "import sys, compressctl.cli, compressctl.recipe, compressctl.registry\n"
        "from compressctl.registry import registry\n"
        "registry.names()\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'torch_pruning', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_validate_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from compressctl.cli import app\n"
        f"result = CliRunner().invoke(app, ['validate', r'{ROOT / 'recipes' / 'digits-resnet-int8.yaml'}'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False False"
