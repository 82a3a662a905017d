"""minialex.training: the training loop for any model, as a library.

    from minialex.training import Trainer, Callback, Checkpoint, StepLR, Plateau
    trainer = Trainer(model, optimizer, train_loader, val_loader, epochs=10, schedule=StepLR(8),
                      callbacks=[Checkpoint("runs/x"), ProgressBar(), EpochLine()])
    history = trainer.fit()                            # or fit(resume="runs/x/last.npz")

    trainer.py     Trainer: fit, evaluate, the loop; evaluate() for a model alone
    callbacks.py   Callback (the hooks) and the callbacks minialex-train uses
    saving.py      Checkpoint: last.npz, best.npz, interrupted.npz, metrics.jsonl
    schedules.py   Constant, StepLR, Plateau
    strategy.py    Local, DataParallel (mpiexec): all-reduce, metric sums, stop votes, setup agreement
    stops.py       Ctrl-C and SIGTERM: StopRequests, Interrupted
    scaler.py      LossScaler: dynamic loss scaling for precision="fp16"
    progress.py    the progress bar (terminal, notebook, log file)
"""
from .callbacks import (Callback, Confusion, EpochLine, FirstLossCheck, LayerDiagnostics, MetricsLog, NonFiniteGuard,
                        Pictures, ProgressBar, StallWarning, Step, StepLog, Stopped)
from .saving import Checkpoint
from .scaler import LossScaler
from .schedules import Constant, Plateau, Schedule, StepLR
from .stops import Interrupted, StopRequests
from .strategy import DataParallel, Local, SetupError
from .trainer import Trainer, evaluate

__all__ = ["Trainer", "evaluate", "Callback", "Confusion", "LossScaler", "Checkpoint", "StepLR", "Plateau", "Constant", "Schedule",
           "EpochLine", "FirstLossCheck", "LayerDiagnostics", "MetricsLog", "NonFiniteGuard", "Pictures",
           "ProgressBar", "StallWarning", "Step", "StepLog", "Stopped", "Interrupted", "StopRequests", "DataParallel",
           "Local", "SetupError"]
