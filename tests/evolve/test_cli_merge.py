"""`evolve merge`: bad input gets one line naming the culprit, exit code 2, nothing written."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from evolve.cli import main


def write_recipe(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def run(capsys, *args) -> tuple[int, str]:
    code = main(list(map(str, args)))
    return code, capsys.readouterr().err.strip()


def linear(a, b, extra_a="weight: 0.5", extra_b="weight: 0.5", method="linear"):
    return (f"merge_method: {method}\nmodels:\n  - model: {a}\n    parameters: {{{extra_a}}}\n"
            f"  - model: {b}\n    parameters: {{{extra_b}}}\n")


def test_good_recipe_merges(family, tmp_path, capsys):
    code, err = run(capsys, "merge", write_recipe(tmp_path, linear(family[1], family[2])), "--out", tmp_path / "o", "--quiet")
    assert code == 0 and (tmp_path / "o" / "model.safetensors").is_file()


def _variant(family, tmp_path, name, edit):
    """A copy of variant_0 with one thing changed by ``edit(dir)``."""
    target = tmp_path / name
    shutil.copytree(family[1], target)
    edit(target)
    return target


def _drop_weights_for_bin(d):
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")


def _reshape(d):
    save_file({"model.embed_tokens.weight": torch.zeros(64, 32)}, d / "model.safetensors")


def _retokenize(d):
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["zz"] = vocab.pop("w5")
    (d / "tokenizer.json").write_text(json.dumps(tok))


def _other_arch(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("case, culprit", [
    ("missing", "model directory not found"),
    ("pickle", "pickle checkpoints (pytorch_model.bin)"),
    ("shape", "has shape [64, 32]"),
    ("vocab", "tokenizer vocabulary differs"),
    ("arch", "architecture MistralForCausalLM differs"),
    ("density", "density: 1.5 is outside (0, 1]"),
    ("method", "unknown method 'blend'"),
    ("param", "'gamma' is not a parameter of linear"),
    ("yaml", "malformed YAML"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(family, tmp_path, capsys, case, culprit):
    a, b = family[1], family[2]
    text = linear(a, b)
    if case == "missing":
        text = linear(a, tmp_path / "nowhere")
    elif case == "pickle":
        text = linear(a, _variant(family, tmp_path, "pickled", _drop_weights_for_bin))
    elif case == "shape":
        text = linear(a, _variant(family, tmp_path, "reshaped", _reshape))
    elif case == "vocab":
        text = linear(a, _variant(family, tmp_path, "retok", _retokenize))
    elif case == "arch":
        text = linear(a, _variant(family, tmp_path, "mistral", _other_arch))
    elif case == "density":
        text = linear(a, b, extra_b="weight: 0.5, density: 1.5")
    elif case == "method":
        text = linear(a, b, method="blend")
    elif case == "param":
        text = linear(a, b, extra_b="weight: 0.5, gamma: 0.1")
    elif case == "yaml":
        text = "merge_method: linear\nmodels: [\n"
    out = tmp_path / "out"
    code, err = run(capsys, "merge", write_recipe(tmp_path, text), "--out", out, "--quiet")
    assert code == 2
    assert culprit in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "evolve.cli", "merge", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.yaml'}: recipe file not found"]
