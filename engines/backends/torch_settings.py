"""The `[torch]` settings of the torch backend, apart from it so that reading them imports no torch
(the numpy path of every stage process must not pay seconds and hundreds of MB for it)."""
from __future__ import annotations

from dataclasses import dataclass

from posestream.stream.core.config import Config, check_choice, check_range

PRECISIONS = ("auto", "fp32", "fp16")


@dataclass(frozen=True)
class TorchSettings:
    """The `[torch]` table, checked where it enters."""

    precision: str = "auto"
    cuda_graphs: bool = True
    compile: bool = False
    max_graphs: int = 32
    checkpoint: str = ""

    def __post_init__(self) -> None:
        check_choice("torch.precision", self.precision, PRECISIONS)
        check_range("torch.max_graphs", self.max_graphs, 0, 256)

    @classmethod
    def from_config(cls, config: Config) -> "TorchSettings":
        table = config.get("torch", {})
        return cls(precision=str(table.get("precision", "auto")),
                   cuda_graphs=bool(table.get("cuda_graphs", True)),
                   compile=bool(table.get("compile", False)),
                   max_graphs=int(table.get("max_graphs", 32)),
                   checkpoint=str(table.get("checkpoint", "")))
