"""Training: the fit loop (:class:`Trainer`, which every model has), callbacks, learning-rate
schedules and the progress bar."""
from .callbacks import Callback, CallbackList, EarlyStopping, History, ModelCheckpoint
from .schedules import CosineAnnealingLR, LRScheduler, StepLR
from .trainer import Trainer
