"""What a launch hands out, on this machine or a cluster: one :class:`Training` (a variant's run,
as its worker's request), how a training stopped by Ctrl-C exits, and the :class:`ClusterSettings`
of a Ray cluster. Below both launchers (:mod:`.launch`, :mod:`.cluster`), so neither imports the
other's module for them."""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass

from ..errors import UserError
from ..services.run_folder import RunFolder
from ..spec.variant import trusted_folders
from ..train.config import TrainConfig
from .grid import Variant

INTERRUPTED = (130, -signal.SIGINT)  # a training stopped by Ctrl-C (its handler, or the signal)


@dataclass(frozen=True)
class Training:
    """One variant's training: a new run of ``config`` into ``folder``, or (``config`` None) the
    continuation of the interrupted run there."""

    variant: Variant
    folder: RunFolder
    config: TrainConfig | None

    def request(self) -> dict:
        """What the worker is handed: the run, and the folders the user trusts for a variant's
        base (``--allow-base``), which a process of its own would not know otherwise."""
        trusted = {"trusted_bases": list(trusted_folders())}
        if self.config is None:
            return {"resume": str(self.folder), **trusted}
        return {"config": dataclasses.asdict(self.config), **trusted}


@dataclass(frozen=True)
class ClusterSettings:
    """The Ray cluster a launch's trainings run on: ``cluster`` is its address (``host:port`` or
    ``ray://host:port``), or ``"local"`` for one started on this machine for the launch; each
    training is a task holding ``gpus_per_training`` GPUs (a fraction in (0, 1] shares one, as
    Ray shares it) and ``cpus_per_training`` CPUs (its threads; None: :meth:`cpus_each`)."""

    cluster: str
    gpus_per_training: float | None = None  # None: none (the trainings run on CPU)
    cpus_per_training: float | None = None  # None: a node's CPUs shared by those sent at once

    def __post_init__(self) -> None:
        gpus, cpus = self.gpus_per_training, self.cpus_per_training
        if gpus is not None and not (0 < gpus <= 1 or _whole(gpus, 1)):
            raise UserError(
                f"{gpus:g} is neither a fraction in (0, 1] (trainings that share a GPU) nor a "
                "whole number of GPUs, 1 or more",
                field="gpus_per_training",
            )
        if cpus is not None and not _whole(cpus, 1):
            raise UserError(
                f"{cpus:g} is not a whole number of CPUs, 1 or more", field="cpus_per_training"
            )
        self.head()  # refuses an address that is not one

    def cpus_each(self, node_cpus: list[float], count: int) -> int:
        """The CPUs, and threads, each of ``count`` trainings sent at once holds on nodes of
        ``node_cpus`` CPUs: ``cpus_per_training`` where given; else one for trainings on GPUs,
        and for trainings on CPU the largest node's shared among them, at least one — as a run
        on this machine alone uses every core. At one CPU each, adapt's lone trainings (its
        start, a trim's fine-tune) held one core of the bench's two while the other idled."""
        if self.cpus_per_training is not None:
            return int(self.cpus_per_training)
        if self.gpus_per_training or not node_cpus or count < 1:
            return 1
        return max(1, int(max(node_cpus) // count))

    def head(self) -> tuple[str, int] | None:
        """The head's host and port (None for ``local``)."""
        address = self.cluster.strip()
        if address == "local":
            return None
        host, colon, port = address.removeprefix("ray://").rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(
                f"{address} is not host:port, ray://host:port or local", field="cluster"
            )
        return host.strip("[]"), int(port)


def _whole(x: float, low: int) -> bool:
    """``x`` is a whole number, at least ``low`` (NaN and infinity are neither)."""
    return x >= low and float(x).is_integer()
