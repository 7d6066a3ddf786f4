"""Per-layer model summaries: output shapes, parameters and multiply-adds, from one forward pass.

Forward hooks on every module record, in the order layers run, what each produced,
so the summary works for any ``nn.Module`` (cnnkit's stacks, timm backbones) without
knowing its structure. Parameters are counted once each, by the module that owns
them; so the total is ``sum(p.numel() for p in model.parameters())``, as timm
and PyTorch count. Counts follow the textbook formulas: a convolution has
``(F x F x C / groups + 1) x K`` parameters (no ``+ 1`` without a bias), a dense
layer ``(N_in + 1) x N_out``, pooling and activations none.

Multiply-adds are those of convolutions and dense layers for one image
(``H_out x W_out x K x F x F x C / groups`` and ``N_in x N_out``); batch norm,
activations and pooling are left out, as in most papers' counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit.base.errors import CnnkitError
from cnnkit.inspect.summary_rows import LayerRow, Summary
from cnnkit.models.interface import evaluating

__all__ = ["LayerRow", "Summary", "layer_macs", "param_formula", "summary"]


@dataclass
class _Call:
    name: str
    module: nn.Module
    order: int
    output: tuple[int, ...] = ()
    macs: int = 0
    first_call: bool = True


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for item in out:
            if (t := _first_tensor(item)) is not None:
                return t
    if isinstance(out, dict):
        for item in out.values():
            if (t := _first_tensor(item)) is not None:
                return t
    return None


def layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    """Multiply-adds of one call for one image (convolutions and dense layers only)."""
    batch = output.shape[0] if output.ndim > 1 else 1
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        x = _first_tensor(inputs)
        kernel = int(torch.tensor(module.kernel_size).prod())
        return int(x.numel() // batch * module.out_channels // module.groups * kernel)
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = int(torch.tensor(module.kernel_size).prod())
        return int(output.numel() // batch * (module.in_channels // module.groups) * kernel)
    if isinstance(module, nn.Linear):
        return int(output.numel() // batch * module.in_features)
    return 0


def param_formula(module: nn.Module) -> str:
    """The textbook formula behind a layer's parameter count, e.g. ``(3x3x1+1)x32``."""
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(
            module, nn.modules.conv._ConvTransposeNd):
        kernel = "x".join(str(k) for k in module.kernel_size)
        cin = module.in_channels // module.groups
        if module.bias is None:
            return f"{kernel}x{cin}x{module.out_channels}"
        return f"({kernel}x{cin}+1)x{module.out_channels}"
    if isinstance(module, nn.Linear):
        if module.bias is None:
            return f"{module.in_features}x{module.out_features}"
        return f"({module.in_features}+1)x{module.out_features}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        return f"2x{module.num_features}"
    return ""


def _own_params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _is_row(module: nn.Module) -> bool:
    """Leaf layers and modules that own parameters directly; ``Identity`` says nothing."""
    if isinstance(module, nn.Identity):
        return False
    return not any(True for _ in module.children()) or bool(_own_params(module))


def _input_shape(model: nn.Module, input_size: int | tuple[int, ...],
                 channels: int | None) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        if channels is None:
            first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
            channels = first.in_channels if first is not None else 3
        return (channels, input_size, input_size)
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        return (channels or 3, *size)  # type: ignore[return-value]
    if len(size) != 3:
        raise CnnkitError(f"input_size is (C, H, W), (H, W) or a side in pixels. "
                          f"Received: {input_size!r}")
    return size  # type: ignore[return-value]


def _trace(model: nn.Module, shape: tuple[int, int, int]) -> list[_Call]:
    names = {id(m): n for n, m in model.named_modules()}
    calls: list[_Call] = []
    open_calls: dict[int, list[_Call]] = {}
    seen: set[int] = set()

    def pre_hook(module: nn.Module, _inputs: Any) -> None:
        call = _Call(names[id(module)], module, len(calls), first_call=id(module) not in seen)
        seen.add(id(module))
        calls.append(call)
        open_calls.setdefault(id(module), []).append(call)

    def post_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        call = open_calls[id(module)].pop()
        out = _first_tensor(output)
        if out is not None:
            call.output = tuple(out.shape[1:]) if out.ndim > 1 else tuple(out.shape)
            call.macs = layer_macs(module, inputs, out)

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        with torch.no_grad(), evaluating(model):
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    except RuntimeError as exc:
        raise CnnkitError(f"The model does not run on {shape[0]}x{shape[1]}x{shape[2]} "
                          f"inputs ({str(exc).splitlines()[0]}). Check --img-size and "
                          "--channels.") from None
    finally:
        for h in handles:
            h.remove()
    return calls


def _count(params: Iterator[nn.Parameter], counted: set[int]) -> tuple[int, int]:
    total = trainable = 0
    for p in params:
        if id(p) in counted:
            continue
        counted.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def summary(model: nn.Module, input_size: int | tuple[int, ...] = 224, *,
            channels: int | None = None, depth: int | None = None,
            model_name: str = "") -> Summary:
    """Run one image of ``input_size`` through ``model`` and summarise every layer.

    ``input_size`` is ``(C, H, W)``, ``(H, W)`` or one side in pixels (channels then
    from ``channels`` or the first convolution). With ``depth``, layers are grouped
    into the modules ``depth`` levels down (``depth=1``: the model's direct children).
    """
    shape = _input_shape(model, input_size, channels)
    calls = _trace(model, shape)
    counted: set[int] = set()
    rows: list[LayerRow] = []
    if depth is None:
        for call in calls:
            if not _is_row(call.module) or not call.name:
                continue
            total, trainable = _count(iter(_own_params(call.module)), counted)
            rows.append(LayerRow(call.name, type(call.module).__name__, call.output, total,
                                 trainable, call.macs, param_formula(call.module)
                                 if call.first_call else "shared"))
    else:
        rows = _grouped(calls, depth, counted, dict(model.named_modules()))
    all_total, all_trainable = _count(model.parameters(), set())
    notes = []
    unused = all_total - sum(r.params for r in rows)
    if unused:
        notes.append(f"{unused:,} parameters belong to layers that this input did not run "
                     "through; they are in the totals.")
    return Summary(tuple(rows), shape, all_total, all_trainable, sum(c.macs for c in calls),
                   model_name, tuple(notes))


def _grouped(calls: list[_Call], depth: int, counted: set[int],
             modules: dict[str, nn.Module]) -> list[LayerRow]:
    if depth < 1:
        raise CnnkitError(f"depth must be 1 or more. Received: {depth}")
    rows: list[LayerRow] = []
    inside: list[str] = []  # names of groups already shown

    def within(name: str, group: str) -> bool:
        return name.startswith(group + ".")

    for call in calls:
        if not call.name or any(within(call.name, g) for g in inside):
            continue
        level = call.name.count(".") + 1
        if level > depth:  # in a part never called as a module (its owner runs its children)
            rows.append(_uncalled_group(".".join(call.name.split(".")[:depth]), calls,
                                        counted, modules))
            inside.append(rows[-1].name)
            continue
        is_group = level == depth and any(True for _ in call.module.children())
        if not (is_group or (_is_row(call.module) and level <= depth)):
            continue
        if is_group:
            inside.append(call.name)
            macs = sum(c.macs for c in calls if within(c.name, call.name) or c is call)
            total, trainable = _count(call.module.parameters(), counted)
            formula = param_formula(call.module)
        else:
            macs = call.macs
            total, trainable = _count(iter(_own_params(call.module)), counted)
            formula = param_formula(call.module)
        rows.append(LayerRow(call.name, type(call.module).__name__, call.output, total,
                             trainable, macs, formula))
    return rows


def _uncalled_group(group: str, calls: list[_Call], counted: set[int],
                    modules: dict[str, nn.Module]) -> LayerRow:
    """The row of a part whose layers ran one by one: its parameters, the multiply-adds of
    its layers and the output of the last of them."""
    members = [c for c in calls if c.name.startswith(group + ".")]
    module = modules[group]
    total, trainable = _count(module.parameters(), counted)
    output = next((c.output for c in reversed(members) if c.output), ())
    return LayerRow(group, type(module).__name__, output, total, trainable,
                    sum(c.macs for c in members), param_formula(module))
