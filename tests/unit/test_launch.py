"""Launching our Triton kernels (bridge/model/launch.py): dependent launch only on CUDA,
and every kernel that may be launched early waits for its inputs before anything else
(a kernel that read first would race the one before it, silently)."""

from __future__ import annotations

import ast
import inspect

import torch

from bridge.model import attention, fp8, kernels, launch


def test_no_dependent_launch_off_cuda(monkeypatch):
    assert launch.launch_options(torch.device("cpu")) == {"DEPENDENT": False}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert launch.interpreting()


def test_dependent_launch_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("BRIDGE_DEPENDENT_LAUNCH", "0")
    launch._dependent_launch.cache_clear()
    try:  # decided before the GPU is asked: works on a machine without one
        assert launch.launch_options(torch.device("cuda", 0)) == {"DEPENDENT": False}
    finally:
        launch._dependent_launch.cache_clear()


def test_every_dependent_kernel_waits_for_its_inputs_first():
    checked = []
    for module in (attention, fp8, kernels):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not isinstance(node, ast.FunctionDef):
                continue
            jit = any("jit" in ast.unparse(d) for d in node.decorator_list)
            params = [a.arg for a in node.args.args]
            if not jit or "DEPENDENT" not in params:
                continue
            body = [s for s in node.body if not isinstance(s, ast.Expr) or not isinstance(
                s.value, ast.Constant)]  # fmt: skip
            assert ast.unparse(body[0]) == "wait_for_inputs(DEPENDENT)", node.name
            checked.append(node.name)
    # the kernels of a short query's forward, all launched with launch_options
    assert {"_attention_kernel", "_add_rmsnorm", "_norm_rope", "kernel"} <= set(checked)
    assert len(checked) >= 8, checked
