"""Mirrors of a run's logs in the tools people already watch: TensorBoard event files, an offline W&B run.

``stats.jsonl`` and ``metrics.jsonl`` stay the source of truth: a mirror is handed each row after it
is appended there (``JsonlLog`` listeners), and each sample grid after it is saved. Both live inside
the run directory (``tensorboard/``, ``wandb/``) and need no network. The step of every point is the
integer image count ``nimg`` (kimg x 1000), so a resumed run continues on the same axis.

After a resume from a checkpoint at ``nimg`` N, the rows the stopped session logged after N are
dropped from the JSONL files and logged again. TensorBoard hides the stopped session's points after
N (``purge_step``), so it shows what the JSONL files hold. W&B cannot take back points and accepts
no step that goes back, so the resumed session (the same run id, kept in ``wandb/bench-mirror.json``)
mirrors only the points at steps the stopped session had not reached. A run started over (no usable
checkpoint) starts its mirrors over too. Only rank 0 mirrors (it alone writes the logs).
"""
from __future__ import annotations

import importlib.util
import secrets
import shutil
import string
from pathlib import Path

from ..errors import BadInput
from ..registry import Registry
from ..rundir import read_json_or_none, write_json_atomic

MIRRORS = Registry("logger", {"tensorboard": "bench.train.mirrors:TensorBoardMirror",
                              "wandb": "bench.train.mirrors:WandbMirror"})
NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger -> (module to import, extra to install)


def check(names) -> list[str]:
    """The loggers asked for, each once; BadInput for an unknown name or a library that is not installed.

    Imports nothing heavy, so ``bench run`` answers before torch loads.
    """
    names = [names] if isinstance(names, str) else list(names or [])
    for name in names:
        MIRRORS.check(name)
        if importlib.util.find_spec(NEEDS[name]) is None:
            raise BadInput(f"the {name} logger needs the {NEEDS[name]} package: pip install 'distill-bench[{name}]'")
    return list(dict.fromkeys(names))


def step_of(row: dict) -> int:
    """A row's step: its integer image count."""
    return round(row["kimg"] * 1000)


def scalars(kind: str, row: dict) -> dict[str, float]:
    """The tags and values a stats or metrics row is mirrored as.

    A stats row gives ``stats/KEY`` for each number; a metrics row one ``metrics/METRIC/nN`` (``metrics_raw/``
    for the raw generator): the sample count is in the tag because FD-like metrics depend on it.
    """
    if kind == "metrics":
        return {f"{'metrics' if row.get('ema', True) else 'metrics_raw'}/{row['metric']}/n{row['n_samples']}":
                row["value"]}
    return {f"stats/{k}": v for k, v in row.items()
            if k not in ("kimg", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardMirror:
    """TensorBoard event files in ``RUN_DIR/tensorboard`` (``torch.utils.tensorboard``)."""

    def __init__(self, directory: Path, config: dict, resumed_nimg: int | None):
        from torch.utils.tensorboard import SummaryWriter

        folder = Path(directory) / "tensorboard"
        if resumed_nimg is None:
            shutil.rmtree(folder, ignore_errors=True)
        # The rows at the checkpoint's nimg are kept; later ones are logged again, so hide the stopped session's.
        self.writer = SummaryWriter(str(folder), purge_step=None if resumed_nimg is None else resumed_nimg + 1)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def image(self, tag: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            self.writer.add_image(tag, np.asarray(img.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class WandbMirror:
    """An offline W&B run in ``RUN_DIR/wandb`` (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it)."""

    def __init__(self, directory: Path, config: dict, resumed_nimg: int | None):
        import wandb

        folder = Path(directory) / "wandb"
        if resumed_nimg is None:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.state_path = folder / "bench-mirror.json"
        state = read_json_or_none(self.state_path) or {}
        self.state = {"id": state.get("id") or _run_id(), "step": state.get("step", -1),
                      "tags": state.get("tags", [])}
        self.reached = (self.state["step"], set(self.state["tags"]))  # where earlier sessions stopped
        write_json_atomic(self.state_path, self.state)
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True)
        self.run = wandb.init(mode="offline", dir=str(directory), id=self.state["id"], resume="allow",
                              project="distill-bench", group=config.get("suite"), name=config.get("run_id"),
                              config=config, settings=settings)
        self.wandb = wandb

    def _new(self, values: dict, step: int) -> dict:
        """The values not mirrored yet: W&B takes no step below its last one, nor a tag twice at a step."""
        last, tags = self.reached
        if step < last:
            return {}
        return {k: v for k, v in values.items() if step > last or k not in tags}

    def _logged(self, values: dict, step: int) -> None:
        if step != self.state["step"]:
            self.state = {**self.state, "step": step, "tags": []}
        self.state["tags"] = sorted({*self.state["tags"], *values})
        write_json_atomic(self.state_path, self.state)  # a killed session's resume knows where it stopped

    def log(self, values: dict[str, float], step: int) -> None:
        values = self._new(values, step)
        if values:
            self.run.log(values, step=step)
            self._logged(values, step)

    def image(self, tag: str, path: Path, step: int) -> None:
        values = self._new({tag: None}, step)
        if values:
            self.run.log({tag: self.wandb.Image(str(path))}, step=step)
            self._logged(values, step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in ("done", "diverged", "interrupted") else 1)
        # finish() can return before W&B's service has written the last history row to the offline
        # file (seen under load: a run's final sample grid missing); teardown waits for the service to exit.
        self.wandb.teardown()


def _run_id() -> str:
    """A new W&B run id (eight lowercase letters and digits, as W&B makes them)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class Mirrors:
    """The mirrors of one run session; ``attach`` them to its logs."""

    def __init__(self, names, directory: Path, config: dict, resumed_nimg: int | None):
        self.mirrors = []
        try:
            for name in check(names):
                self.mirrors.append(MIRRORS.get(name)(Path(directory), config, resumed_nimg))
        except BaseException:
            self.close("failed")
            raise

    def watch(self, log, kind: str) -> None:
        """Mirror every row appended to ``log`` (a ``JsonlLog``; ``kind`` is ``stats`` or ``metrics``)."""
        log.listeners.append(lambda row: self.row(kind, row))

    def row(self, kind: str, row: dict) -> None:
        values, step = scalars(kind, row), step_of(row)
        for mirror in self.mirrors:
            mirror.log(values, step)

    def grid(self, path: Path, kimg: float) -> None:
        """Mirror a saved sample grid (PNG) as the image ``samples``."""
        for mirror in self.mirrors:
            mirror.image("samples", Path(path), round(kimg * 1000))

    def close(self, status: str) -> None:
        for mirror in self.mirrors:
            mirror.close(status)
        self.mirrors = []


def attach(job, names, directory: Path, config: dict, resumed: bool) -> Mirrors | None:
    """Open the loggers ``names`` for ``job`` (a training or teacher run) and mirror its logs; None without any.

    ``resumed``: the job continues from a checkpoint (its ``nimg``); otherwise the mirrors start over.
    """
    if not names:
        return None
    mirrors = Mirrors(names, directory, config, round(job.kimg * 1000) if resumed else None)
    for kind in ("stats", "metrics"):
        if getattr(job, kind, None) is not None:
            mirrors.watch(getattr(job, kind), kind)
    job.mirror = mirrors
    return mirrors
