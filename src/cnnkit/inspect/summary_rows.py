"""A model summary's rows and totals, and how they are shown: plain data and rich tables,
without torch, so that a layer stack's summary can be computed without building it
(:func:`cnnkit.inspect.summary.summary` traces any torch model into the same rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerRow:
    """One layer (or, with ``depth``, one block) of a summary."""

    name: str
    type: str
    output_shape: tuple[int, ...]  # without the batch dimension: (C, H, W) or (N,)
    params: int
    trainable: int
    macs: int
    formula: str = ""  # how ``params`` follows from the layer's shape, e.g. (3x3x1+1)x32

    @property
    def frozen(self) -> int:
        return self.params - self.trainable


@dataclass(frozen=True)
class Summary:
    """A model's layers and totals; ``print(summary)`` or ``rich`` shows it as a table."""

    rows: tuple[LayerRow, ...]
    input_shape: tuple[int, ...]  # (C, H, W)
    total_params: int
    trainable_params: int
    total_macs: int
    model_name: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def frozen_params(self) -> int:
        return self.total_params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "input_shape": list(self.input_shape),
            "total_params": self.total_params, "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params, "total_macs": self.total_macs,
            "layers": [{"name": r.name, "type": r.type, "output_shape": list(r.output_shape),
                        "params": r.params, "trainable": r.trainable, "macs": r.macs,
                        "formula": r.formula} for r in self.rows],
        }

    def table(self) -> Any:
        """A :class:`rich.table.Table` with one row per layer and the totals below."""
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        shape = "x".join(str(s) for s in self.input_shape)
        title = f"{self.model_name}  (input {shape}, C x H x W)" if self.model_name \
            else f"input {shape} (C x H x W)"
        table = Table(title=escape(title), title_justify="left", show_footer=True,
                      box=box.SIMPLE_HEAD, pad_edge=False)
        show_frozen = self.frozen_params > 0

        def widest(values: list[str], header: str) -> int:
            return max([len(header), *map(len, values)])

        # Every column keeps its width except "type", which folds in a narrow terminal.
        names = [r.name for r in self.rows] + ["total"]
        shapes = [_shape(r.output_shape) for r in self.rows]
        params = [f"{r.params:,}" for r in self.rows] + [f"{self.total_params:,}"]
        table.add_column("layer", footer="total", min_width=widest(names, "layer"))
        table.add_column("type", overflow="fold")
        table.add_column("output shape", justify="right", min_width=widest(shapes, "output shape"))
        table.add_column("parameters", justify="right", footer=f"{self.total_params:,}",
                         min_width=widest(params, "parameters"))
        table.add_column("= formula", style="dim",
                         min_width=widest([r.formula for r in self.rows], "= formula"))
        if show_frozen:
            table.add_column("frozen", justify="right", footer=f"{self.frozen_params:,}",
                             min_width=widest(params, "frozen"))
        table.add_column("mult-adds", justify="right", footer=_si(self.total_macs),
                         min_width=9)
        for r in self.rows:
            cells = [escape(r.name), escape(r.type), _shape(r.output_shape), f"{r.params:,}",
                     escape(r.formula)]
            if show_frozen:
                cells.append(f"{r.frozen:,}" if r.frozen else "")
            cells.append(_si(r.macs) if r.macs else "")
            table.add_row(*cells)
        return table

    def totals_text(self) -> str:
        return (f"Parameters: {self.total_params:,} total, {self.trainable_params:,} trainable, "
                f"{self.frozen_params:,} frozen; multiply-adds per image: "
                f"{self.total_macs:,} ({_si(self.total_macs)})")

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        parts: list[Any] = [self.table(), Text(self.totals_text())]
        parts += [Text(n, style="dim") for n in self.notes]
        return Group(*parts)

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=140, record=True, file=_NullFile(), color_system=None)
        console.print(self)
        return console.export_text()


class _NullFile:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape) if shape else "-"


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def stack_summary(layers: list[dict[str, Any]], input_shape: tuple[int, int, int],
                  num_classes: int, model_name: str = "") -> Summary:
    """The summary of a layer stack (a spec, a .yaml or a registered stack) from its
    layers alone: the rows a traced forward pass of the built model gives."""
    from cnnkit.models.layerspec import plan_stack

    channels, size, _ = input_shape
    planned, units = plan_stack(layers, channels, size)
    counters = {"features": 0, "head": 0}
    rows = []
    for p in planned:
        rows.append(LayerRow(f"{p.part}.{counters[p.part]}", p.type, p.shape, p.params,
                             p.params, p.macs, p.formula))
        counters[p.part] += 1
    head = (units + 1) * num_classes
    rows.append(LayerRow("classifier", "Linear", (num_classes,), head, head,
                         units * num_classes, f"({units}+1)x{num_classes}"))
    total = sum(r.params for r in rows)
    return Summary(tuple(rows), input_shape, total, total, sum(r.macs for r in rows),
                   model_name)
