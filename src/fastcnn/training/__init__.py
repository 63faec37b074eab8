"""Training: the fit loop (:class:`Trainer`, which every model has), callbacks, learning-rate
schedules and the progress bar."""
from .callbacks import (Callback, CallbackList, CSVLogger, EarlyStopping, History, ModelCheckpoint,
                        TerminateOnNaN)
from .schedules import CosineAnnealingLR, LinearWarmup, LRScheduler, ReduceLROnPlateau, StepLR
from .trainer import NonFiniteError, Trainer
