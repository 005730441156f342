import lightning as L
from lightning.pytorch import Trainer as T
from lightning.pytorch import seed_everything as seed

from mypkg import LitModel, train_loader


class Trainer:
    """The user's own class named Trainer: not Lightning's, so not touched."""

    def __init__(self, max_epochs):
        self.max_epochs = max_epochs


seed(123)
mine = Trainer(max_epochs=3)
first = T(max_epochs=2, enable_progress_bar=False)
first.fit(LitModel(), train_loader)
second = L.Trainer(max_epochs=1)
second.fit(model=LitModel(), train_dataloaders=train_loader)
