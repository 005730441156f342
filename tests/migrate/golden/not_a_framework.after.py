"""Names that look like framework objects but are not: nothing here may change."""
from sklearn.linear_model import LogisticRegression

from mypkg.training import EarlyStopping, Trainer, create_supervised_trainer


class Model:
    def compile(self, optimizer, loss):
        self.optimizer, self.loss = optimizer, loss

    def fit(self, x, y, epochs=1):
        return self


trainer = Trainer(max_epochs=3, gpus=1, callbacks=[EarlyStopping(monitor="val_loss")])
trainer.fit(Model(), None)
model = Model()
model.compile(optimizer="adam", loss="mse")
model.fit([[0.0]], [0.0], epochs=2)
clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
engine = create_supervised_trainer(model, None, None)
