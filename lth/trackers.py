"""The trackers behind `logger=tensorboard|mlflow|wandb`: one stream, three writers.

Every tracker gets the same numbers (lth.loggers.RoundStream): while round r trains, the running training loss
and accuracy every few steps and each evaluation as it is made, at the training step; when the round is
published, its summary at step r. `Tracker` holds what the three share: a state file in the run directory
(`<run>/<logger>.json`) with the last step each stream sent, so a resumed or retrained round sends only what the
tracker has not got (a resumed round replays the stopped one bit for bit: nothing is lost, nothing doubled), and,
for MLflow and W&B, the tracker run's id, so a resumed lth run continues its tracker run. The writers only place
the numbers:

- TensorBoard: one folder per round, `tensorboard/round_NN/` (side by side as TensorBoard runs), the summaries
  in `tensorboard/rounds/` as `rounds/<metric>`.
- MLflow: one MLflow run per lth run, in the experiment `logger_project`, its params the flattened config; round
  r's curves as `round_NN/<metric>` at the training step, the summaries as `rounds/<metric>` at the round. A
  file store in `<run>/mlruns` unless `logger_uri` names a tracking server or database.
- W&B: the same keys in one W&B run, drawn against `train_step` and `round` (W&B's own step counts on across
  resumes); offline in `<run>/wandb/` (`wandb sync`) unless `logger_online=true`.

A run's tracker opens when the run first writes to it and closes when its rounds end (`session`), marked
finished, interrupted (MLflow: KILLED; W&B: exit code 130) or failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from lth.errors import Interrupted
from lth.schema import Config
from lth.structured import flatten

Scalars = dict[str, float]


class Tracker(ABC):
    """One lth run's stream into one tracker: the state file and the steps already sent are kept here; `write`
    places the numbers."""

    name: str  # the `logger` option; the state file is <run>/<name>.json

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.state_file = run_dir / f"{self.name}.json"
        self.state: dict[str, Any] = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}
        self.state.setdefault("sent", {})

    def send(self, stream: str, round_index: int | None, values: Scalars, step: int) -> None:
        """`values` at `step`, unless `stream` sent that step already (its last step is in the state file)."""
        if step <= self.state["sent"].get(stream, -1):
            return
        self.write(round_index, values, step)
        self.state["sent"][stream] = step
        self.save()

    def restart(self, **ids: Any) -> None:
        """A new tracker run (`ids` name it): nothing of it sent yet."""
        self.state = {"sent": {}, **ids}
        self.save()

    def save(self) -> None:
        temporary = self.state_file.with_name(f".{self.state_file.name}.tmp")
        temporary.write_text(json.dumps(self.state))
        os.replace(temporary, self.state_file)  # whole or not at all; not fsynced: it is rewritten at every send

    @abstractmethod
    def write(self, round_index: int | None, values: Scalars, step: int) -> None:
        """Round `round_index`'s curves at training step `step`, or (None) the rounds' summary at round `step`."""

    def flush(self) -> None:  # noqa: B027 (a hook: MLflow's and W&B's clients send as they log)
        """Make what was written visible now (after an evaluation, after a publish)."""

    def end_round(self, round_index: int) -> None:
        self.flush()

    @abstractmethod
    def close(self, ending: str) -> None:
        """`ending`: finished, interrupted or failed."""


class TensorBoard(Tracker):
    name = "tensorboard"

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        self.writers: dict[int | None, Any] = {}  # SummaryWriter per round folder; None: rounds/

    def write(self, round_index: int | None, values: Scalars, step: int) -> None:
        if round_index not in self.writers:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            folder = "rounds" if round_index is None else f"round_{round_index:02d}"
            self.writers[round_index] = SummaryWriter(str(self.run_dir / "tensorboard" / folder))
        prefix = "rounds/" if round_index is None else ""
        for key, value in values.items():
            self.writers[round_index].add_scalar(prefix + key, value, step)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def end_round(self, round_index: int) -> None:
        if round_index in self.writers:
            self.writers.pop(round_index).close()

    def close(self, ending: str) -> None:
        for writer in self.writers.values():
            writer.close()


class KeyedTracker(Tracker):
    """MLflow and W&B: one tracker run per lth run, each stream under its own keys (`round_01/val/loss`,
    `rounds/test_accuracy`)."""

    def write(self, round_index: int | None, values: Scalars, step: int) -> None:
        prefix = "rounds" if round_index is None else f"round_{round_index:02d}"
        self.log({f"{prefix}/{key}": value for key, value in values.items()}, step, summary=round_index is None)

    @abstractmethod
    def log(self, values: Scalars, step: int, summary: bool) -> None:
        """Prefixed `values` at a training step, or (`summary`) at a round."""

    def title(self) -> str:
        cfg = self.cfg
        return f"{cfg.model.name} on {cfg.dataset.name}, seed {cfg.seed} ({self.run_dir.name})"

    def params(self) -> dict[str, str]:
        """The flattened config as the trackers' string params (MLflow keeps at most 500 characters of one)."""
        return {key: str(value)[:500] for key, value in flatten(self.cfg).items()}


class MLflow(KeyedTracker):
    name = "mlflow"
    ENDINGS: ClassVar = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        uri = cfg.logger_uri or (run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps its file store behind this switch (still supported)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        if self.state.get("uri") == uri:  # a resumed run: the same MLflow run, RUNNING again
            self.client.update_run(self.state["run_id"], status="RUNNING")
            self.note_changed_params()
        else:  # a new run, or `logger_uri` changed on resume: a new MLflow run there
            self.restart(uri=uri, run_id=self.create_run())

    def create_run(self) -> str:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        project = self.cfg.logger_project
        experiment = self.client.get_experiment_by_name(project)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(project)
            except MlflowException:  # a sweep job beside this one made it first
                experiment_id = self.client.get_experiment_by_name(project).experiment_id
        tags = {"lth.run_dir": str(self.run_dir.resolve())}
        run_id = self.client.create_run(experiment_id, run_name=self.title(), tags=tags).info.run_id
        params = [Param(key, value) for key, value in self.params().items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=params[start : start + 100])
        return run_id

    def note_changed_params(self) -> None:
        """Params cannot change in MLflow: what a resume changed (prune.rounds, ...) becomes a `resumed.KEY` tag."""
        logged = self.client.get_run(self.state["run_id"]).data.params
        for key, value in self.params().items():
            if logged.get(key, value) != value:
                self.client.set_tag(self.state["run_id"], f"resumed.{key}", value)

    def log(self, values: Scalars, step: int, summary: bool) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.state["run_id"], metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, ending: str) -> None:
        self.client.set_terminated(self.state["run_id"], status=self.ENDINGS[ending])


class WandB(KeyedTracker):
    name = "wandb"
    ENDINGS: ClassVar = {"finished": 0, "interrupted": 130, "failed": 1}

    def __init__(self, cfg: Config, run_dir: Path) -> None:
        super().__init__(cfg, run_dir)
        import wandb

        if "id" not in self.state:
            self.restart(id=uuid.uuid4().hex[:16], step=0)  # step: W&B's own, on across resumes
        self.run = wandb.init(
            project=cfg.logger_project,
            id=self.state["id"],
            resume="allow",
            dir=str(run_dir),
            name=self.title(),
            mode="online" if cfg.logger_online else "offline",
            reinit="create_new",  # replicates: one W&B run per seed, side by side in one process
            settings=wandb.Settings(console="off", silent=not cfg.logger_online, quiet=True),
        )
        self.run.config.update(self.params(), allow_val_change=True)  # a resume may change prune.rounds, ...
        for axis, keys in (("train_step", "round_*"), ("round", "rounds/*")):
            self.run.define_metric(axis)
            self.run.define_metric(keys, step_metric=axis)

    def log(self, values: Scalars, step: int, summary: bool) -> None:
        self.run.log({**values, "round" if summary else "train_step": step}, step=self.state["step"])
        self.state["step"] += 1  # saved with the step sent

    def close(self, ending: str) -> None:
        self.run.finish(exit_code=self.ENDINGS[ending])


TRACKERS: dict[str, type[Tracker]] = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}
_RUNS: dict[Path, Config] = {}  # the runs of the open sessions, by resolved run directory
_OPEN: dict[Path, Tracker] = {}


@contextlib.contextmanager
def session(runs: Iterable[tuple[Config, Path]]) -> Iterator[None]:
    """The trackers of these runs while their rounds train: each opened when first written to (`opened`), all
    closed at the end with how the rounds ended."""
    keys = []
    for cfg, run_dir in runs:
        if cfg.logger in TRACKERS:
            keys.append(run_dir.resolve())
            _RUNS[keys[-1]] = cfg
    ending = "failed"
    try:
        yield
        ending = "finished"
    except (Interrupted, KeyboardInterrupt):
        ending = "interrupted"
        raise
    finally:
        for key in keys:
            del _RUNS[key]
            tracker = _OPEN.pop(key, None)
            if tracker is not None:
                tracker.close(ending)


def opened(run_dir: Path) -> Tracker:
    """The tracker of a run in an open `session` (its `logger` is one of TRACKERS), opened on first use."""
    key = run_dir.resolve()
    if key not in _OPEN:
        cfg = _RUNS[key]
        _OPEN[key] = TRACKERS[cfg.logger](cfg, run_dir)
    return _OPEN[key]
