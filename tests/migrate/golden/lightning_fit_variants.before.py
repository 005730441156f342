import pytorch_lightning as pl

from mypkg import DataModule, LitModel

dm = DataModule()
model = LitModel()
trainer = pl.Trainer(max_steps=100)
trainer.fit(model, datamodule=dm, ckpt_path="last.ckpt")
trainer.validate(model, datamodule=dm)
out = trainer.test(model, dataloaders=dm.test_dataloader())
preds = trainer.predict(model, dataloaders=dm.predict_dataloader())
print(out[0]["test_loss"], trainer.callback_metrics.get("val_loss", 0.0), trainer.callback_metrics["val_acc"].item())
print(trainer.current_epoch, trainer.global_step, trainer.callback_metrics["train_loss"])
print(trainer.callback_metrics["my_custom_metric"])
trainer.save_checkpoint("final.ckpt")
