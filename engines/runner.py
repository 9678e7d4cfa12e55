"""The one place a plugin opens a model: `ModelRunner`, the base of the detector and the SPPEs.

In the style of rtmlib's `BaseTool`: the base opens a prepared model by name from the cache, checks
its card's task, verifies the opened file's sha256 against the card (a damaged or tampered file is
one `ModelError`, never a session), makes the engine through the factory with the configured backend,
checks the model's tensors against the card's kind, and owns `run()`. Subclasses pre-process before
and decode after it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from posestream.engines.backends.base import Engine
from posestream.engines.backends.factory import create_engine
from posestream.engines.backends.torch_inputs import TorchInputs, torch_inputs_for
from posestream.engines.model_card import ModelCard, Normalisation, sha256_file
from posestream.engines.model_check import check_model_kind
from posestream.engines.models import load_card, runtime_model_file
from posestream.engines.preprocess import normalise
from posestream.stream.core.errors import ModelError
from posestream.stream.core.settings import Settings

log = logging.getLogger(__name__)


class ModelRunner:
    """Holds one verified model's engine. `tasks` = the card tasks a subclass can decode."""

    tasks: ClassVar[tuple[str, ...]] = ()
    takes_images = False  # `take_images`: uint8 images go into the model as they are

    def __init__(self, settings: Settings, model: str, threads: int) -> None:
        self.engine: Engine | None = None
        self.card, directory = load_card(settings, model)
        if self.tasks and self.card.task not in self.tasks:
            raise ModelError(f"model '{model}' is a '{self.card.task}' model; {type(self).__name__} "
                             f"needs a {' or '.join(repr(t) for t in self.tasks)} model")
        self.variant = self.choose_variant(self.card)
        path = self.card.file(directory, self.variant)
        self._verify(path)
        path = runtime_model_file(settings, self.card, directory, self.variant)  # OpenVINO: INT8 model
        int8 = path != self.card.file(directory, self.variant)
        self.engine = create_engine(path, device=settings.engine.device, backend=settings.engine.backend,
                                    threads=threads, normalization=self.card.input, settings=settings)
        # what actually runs, for the run's summary and metrics (the stage reports it)
        self.model_info = {"model": self.card.name, "file": path.name, "backend": self.engine.backend,
                           "precision": "int8" if int8 else str(getattr(self.engine, "precision", "") or "fp32")}
        if int8:
            self.model_info["recipe"] = self.card.extra["int8"]["quantization"]["recipe"]
        try:
            check_model_kind(self.engine, self.card)
            # None: numpy/OpenCV pre-processing; else torch on the engine's device
            self.torch_inputs: TorchInputs | None = torch_inputs_for(settings.engine.preprocess, self.engine)
        except BaseException:  # do not leak the session
            self.close()
            raise

    def take_images(self, settings: Settings, normalisation: Normalisation | None = None) -> None:
        """How the subclass's BGR uint8 images become the model's input (`model_input`): normalised as
        `normalisation` says (None: the card's), in numpy, or, with `engine.preprocess = "auto"` on the
        numpy path, inside the model where the engine can (`Engine.accept_images`; `takes_images`).
        Call it after reading the engine's input shape: the model then takes NHWC uint8. Closes the
        engine when it fails (a malformed card)."""
        try:
            self.normalisation = normalisation if normalisation is not None else Normalisation.of_card(self.card)
            self.takes_images = (self.torch_inputs is None and settings.engine.preprocess == "auto"
                                 and self.engine is not None and self.engine.accept_images(self.normalisation))
        except BaseException:
            self.close()
            raise

    def model_input(self, images: Sequence[np.ndarray] | np.ndarray, dtype: np.dtype = np.float32) -> np.ndarray:
        """The engine's input for BGR uint8 images of one size ([N,H,W,3] or a list of [H,W,3]): as
        they are where the model normalises them (`takes_images`), else numpy's float NCHW (`dtype`)."""
        batch = np.stack(images) if isinstance(images, list) else images
        return np.ascontiguousarray(batch) if self.takes_images else normalise(batch, self.normalisation, dtype)

    def choose_variant(self, card: ModelCard) -> str:
        """Which of the card's files to open (hook; default: the first)."""
        return next(iter(card.files))

    def _verify(self, path: Path) -> None:
        expected = self.card.files[self.variant].get("sha256")
        if not path.is_file():
            raise ModelError(f"model '{self.card.name}' variant '{self.variant}': {path} is missing "
                             "(prepare or import it again)")
        if sha256_file(path) != expected:
            raise ModelError(f"model '{self.card.name}' variant '{self.variant}': {path} does not match "
                             "the sha256 in its card (damaged or altered; prepare or import it again)")

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run one batch: numpy in and out, or on the torch path device tensors in and out."""
        if self.engine is None:
            raise ModelError(f"{type(self).__name__} is closed")
        if self.torch_inputs is not None:
            return self.torch_inputs.run(feeds)
        return self.engine.run(feeds)

    def close(self) -> None:
        """Release the engine; safe twice."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> "ModelRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
