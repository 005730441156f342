"""The tool checks its own output (issue 14): what a rewrite leaves broken is a manual finding with a TODO at
that line; manual constructs are never deleted; nothing the tool did not rewrite changes; settings are mapped
or reported; what the facade cannot run (string inputs, several inputs or outputs, unlabelled batches,
LightningCLI) is never "converted"."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("libcst")

from unified.migrate import migrate_text  # noqa: E402
from unified.migrate.report import MigrationResult  # noqa: E402
from unified.migrate.rule import TODO  # noqa: E402

IGNITE = textwrap.dedent('''\
    """Doc one."""
    """Doc two."""
    import os

    import numpy as np
    import torch

    from ignite.engine import Events, create_supervised_trainer, create_supervised_evaluator
    from ignite.metrics import Accuracy, Precision, RunningAverage

    import json

    model = torch.nn.Linear(4, 3)
    trainer = create_supervised_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.CrossEntropyLoss())
    evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy()})
    evaluator.logger = None
    for ev in [Events.EPOCH_COMPLETED]:
        trainer.add_event_handler(ev, lambda e: print(e.state.epoch))
    if not trainer.has_event_handler(print):
        @trainer.on(Events.COMPLETED)
        def done(engine):
            engine.terminate()
    x = [RunningAverage(output_transform=lambda o: o).attach(trainer, "loss")]
    trainer.run(loader, max_epochs=2)
    print(evaluator.state.metrics["accuracy"])
''')


def manual_lines(result):
    return sorted({f.line for f in result.findings if f.action == "manual"})


def todo_above(text: str, needle: str) -> bool:
    """The line holding ``needle`` has a TODO comment right above it (or above its decorators)."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if needle in line)
    while i > 0 and lines[i - 1].lstrip().startswith("@"):
        i -= 1
    return i > 0 and TODO in lines[i - 1]


def test_every_line_the_rewrite_breaks_gets_a_finding_and_a_todo():
    result = migrate_text(IGNITE, "a.py")
    new = result.new_text
    assert new is not None and MigrationResult(files=[result]).exit_code() == 2
    rules = {f.rule for f in result.findings if f.action == "manual"}
    assert {"verify.undefined-name", "verify.facade-attribute", "ignite.handler.custom",
            "ignite.metrics.running-average"} <= rules
    # each at its original line, each marked in the output
    assert manual_lines(result) == [16, 18, 19, 20, 23]
    for needle in ("evaluator.logger = None", "trainer.add_event_handler(ev,", "if not trainer.has_event_handler",
                   "def done(engine):", "x = [RunningAverage"):
        assert todo_above(new, needle), needle
    # the read after training refers to a defined name
    assert 'print(trainer.result.metrics["val/accuracy"])' in new


def test_a_manual_construct_is_never_deleted_and_a_second_run_reports_as_many():
    result = migrate_text(IGNITE, "a.py")
    new = result.new_text
    assert "    trainer.add_event_handler(ev, lambda e: print(e.state.epoch))" in new
    assert "\n    pass\n" not in new
    again = migrate_text(new, "a.py")
    assert again.new_text is None
    assert sum(f.action == "manual" for f in again.findings) == sum(f.action == "manual" for f in result.findings)


def test_nothing_unrelated_changes():
    new = migrate_text(IGNITE, "a.py").new_text
    head = new.split("model = ")[0]
    # both docstrings first, import groups and their blank lines kept, unused imports of the user kept
    assert head.startswith('"""Doc one."""\n"""Doc two."""\nimport os\n\nimport numpy as np\nimport torch\n\n')
    assert "from ignite.metrics import Precision, RunningAverage\n\nimport json\n" in head
    assert "from unified import UnifiedTrainer" in head


def test_unchanged_file_reports_no_conversion():
    src = textwrap.dedent('''\
        import keras
        import numpy as np

        x = np.zeros((100, 10, 3), "float32")
        m = np.zeros((100, 4), "float32")
        y = np.zeros(100, "int64")
        model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit([x, m], y, epochs=2)
    ''')
    result = migrate_text(src, "k.py")
    assert result.new_text is None
    assert [f.rule for f in result.findings] == ["keras.fit.multi-input"]  # two input arrays: manual, nothing converted
    assert "x is a list of 2" in result.findings[0].hint


def test_keras_nd_fit_converts_in_the_models_layout():
    src = textwrap.dedent('''\
        import keras
        import numpy as np

        x = np.zeros((100, 8, 8, 1), "float32")
        y = np.zeros(100, "int64")
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=2)
    ''')
    result = migrate_text(src, "k.py")
    assert not [f for f in result.findings if f.action == "manual"], result.findings
    (nd,) = [f for f in result.findings if f.rule == "keras.model.nd-input"]
    assert nd.action == "converted" and "N,H,W,C" in nd.hint
    assert "trainer.fit(model=model, data=(x, y))" in result.new_text  # the user's arrays, not transposed


@pytest.mark.parametrize("model, rule", [
    ('keras.Sequential([keras.layers.TextVectorization(), keras.layers.Embedding(10, 4), '
     'keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2, activation="softmax")])', "keras.model.string-input"),
    ('keras.Sequential([keras.layers.LSTM(4, return_sequences=True), '
     'keras.layers.TimeDistributed(keras.layers.Dense(2, activation="softmax"))])', "keras.model.per-step-output"),
    ('keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()([a, b])))',
     "keras.model.multi-io"),
])
def test_keras_models_the_facade_cannot_take_stay_on_keras(model, rule):
    src = textwrap.dedent(f'''\
        import keras
        a, b = keras.Input((3,)), keras.Input((3,))
        model = {model}
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2)
    ''')
    result = migrate_text(src, "k.py")
    assert result.new_text is None
    assert [f.rule for f in result.findings] == [rule, "keras.fit.left-on-keras"], result.findings
    assert all(f.action == "manual" and f.hint for f in result.findings)
    # a module that only builds such a model has nothing to migrate: nothing reported
    assert migrate_text(src.replace("model.fit(x, y, epochs=2)\n", ""), "k.py").findings == []


def test_hints_quote_the_source():
    src = textwrap.dedent('''\
        import keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=2)
        metric = "accuracy"
        print(history.history[metric])
    ''')
    result = migrate_text(src, "k.py")
    (f,) = [f for f in result.findings if f.action == "manual"]
    assert f.construct == "history.history[metric]" and f.hint.startswith("metric has no facade key")
    assert "Code(" not in result.new_text


def test_keras_settings_mapped_or_reported_and_a_reloaded_checkpoint_is_manual():
    src = textwrap.dedent('''\
        import keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        cbs = [keras.callbacks.ModelCheckpoint("best.keras", save_best_only=True),
               keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=1, min_lr=1e-4, min_delta=0.01)]
        model.fit(x, y, epochs=3, validation_split=0.2, callbacks=cbs)
        best = keras.models.load_model("best.keras")
    ''')
    result = migrate_text(src, "k.py")
    (spec,) = result.specs
    assert spec["spec"]["scheduler"] == {"name": "reduce_on_plateau", "monitor": "val/loss", "mode": "min",
                                         "factor": 0.5, "patience": 1, "min_lr": 1e-4}
    assert any(f.rule == "keras.callbacks.reducelronplateau" and f.action == "unsupported" and "min_delta" in f.construct
               for f in result.findings)
    (reload,) = [f for f in result.findings if f.action == "manual"]
    assert reload.rule == "keras.callbacks.modelcheckpoint.reload" and reload.line == 7
    assert todo_above(result.new_text, 'best = keras.models.load_model("best.keras")')


def test_ignite_checkpoint_keep_all_and_every():
    src = textwrap.dedent('''\
        import torch
        from ignite.engine import Events, create_supervised_trainer
        from ignite.handlers import Checkpoint, DiskSaver
        model = torch.nn.Linear(4, 3)
        trainer = create_supervised_trainer(model, torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss())
        handler = Checkpoint({"model": model}, DiskSaver("ckpt"), n_saved=None)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler)
        trainer.run(loader, max_epochs=4)
    ''')
    result = migrate_text(src, "i.py")
    (spec,) = result.specs
    assert spec["spec"]["callbacks"] == [{"model_checkpoint": {"save_top_k": -1, "save_last": True,
                                                               "every_n_epochs": 2}}]
    assert MigrationResult(files=[result]).exit_code() == 1


def test_ignite_print_handlers_become_a_generated_callback():
    src = textwrap.dedent('''\
        import torch
        from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
        from ignite.metrics import Accuracy, Loss, RunningAverage
        model = torch.nn.Linear(4, 3)
        trainer = create_supervised_trainer(model, torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss())
        evaluator = create_supervised_evaluator(model, metrics={"acc": Accuracy(), "nll": Loss(torch.nn.CrossEntropyLoss())})
        RunningAverage(output_transform=lambda x: x).attach(trainer, "loss")


        @trainer.on(Events.EPOCH_COMPLETED)
        def log_validation(engine):
            evaluator.run(val_loader)
            m = evaluator.state.metrics
            print(engine.state.epoch, m["acc"], m["nll"], engine.state.metrics["loss"])


        def log_iter(engine):
            print(engine.state.iteration, engine.state.output)


        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=10), log_iter)
        trainer.run(train_loader, max_epochs=3)
    ''')
    result = migrate_text(src, "h.py")
    new = result.new_text
    assert MigrationResult(files=[result]).exit_code() == 1, [f for f in result.findings if f.action == "manual"]
    assert "class MigratedHandlers(Callback):" in new and "callbacks=[MigratedHandlers()]" in new
    assert "def on_epoch_end(self, state):\n        log_validation(state)" in new
    assert "if state.global_step % 10 == 0:\n            log_iter(state)" in new
    assert 'print(engine.epoch, m["val/accuracy"], m["val/loss"], engine.metrics["train/loss"])' in new
    assert "print(engine.global_step, engine.last_loss)" in new
    assert "evaluator" not in new
    assert "from unified.callbacks import Callback" in new
    compile(new, "h.py", "exec")


def test_lightning_cli_and_unlabelled_batches_are_reported_not_converted():
    cli = textwrap.dedent('''\
        from pytorch_lightning.cli import LightningCLI
        from mymodels import Model
        cli = LightningCLI(Model, run=False)
        cli.trainer.fit(cli.model)
    ''')
    result = migrate_text(cli, "c.py")
    assert result.new_text is None
    assert [f.rule for f in result.findings] == ["lightning.cli.lightning-cli", "lightning.cli.trainer"]
    unlabelled = textwrap.dedent('''\
        import pytorch_lightning as pl
        import torch
        class AE(pl.LightningModule):
            def forward(self, x):
                return x
            def training_step(self, batch, batch_idx):
                return self(batch).sum()
            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)
        trainer = pl.Trainer(max_epochs=1)
        trainer.fit(AE(), loader)
    ''')
    result = migrate_text(unlabelled, "u.py")
    assert result.new_text is None
    assert {f.rule for f in result.findings} == {"lightning.module.unlabelled", "lightning.trainer.left-on-lightning"}
    assert all(f.action == "manual" for f in result.findings)


def test_lost_registration_is_reported():
    from unified.migrate.verify import problems

    old = "import x\n\n@engine.on(E)\ndef handler(e):\n    pass\n"
    new = "import x\n\ndef handler(e):\n    pass\n"
    (p,) = problems(old, new, "f.py")
    assert p.rule == "verify.lost-registration" and p.line == 3
