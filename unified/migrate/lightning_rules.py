"""Lightning rules: ``Trainer(...)`` and its arguments, ``fit/validate/test/predict``, callbacks, loggers,
``seed_everything``, reads of ``trainer.callback_metrics``; LightningModules are checked for what the
facade cannot run (manual optimization, schedulers from ``configure_optimizers``, no ``forward``)."""

from __future__ import annotations

from typing import Any, Optional

import libcst as cst

from unified.migrate import codegen
from unified.migrate.keys import facade_key
from unified.migrate.mapping import TORCH_LOSSES, metrics_for, safe_name, spec_dict, unknown_metric_keys
from unified.migrate.rule import Rule

DIRECT = {"max_epochs": "max_epochs", "max_steps": "max_steps", "log_every_n_steps": "log_every_n_steps",
          "deterministic": "deterministic", "accumulate_grad_batches": "accumulate_grad_batches",
          "enable_progress_bar": "progress_bar"}
NO_EFFECT = {
    "enable_model_summary": "model summary: nothing to carry over",
    "num_sanity_val_steps": "sanity validation: the facade runs none",
    "enable_checkpointing": "checkpoints are written by a model_checkpoint callback only",
    "benchmark": "cudnn benchmark: CPU here, no effect",
    "profiler": "profiling is not carried over (no effect on training)",
    "num_nodes": "single node",
}
UNSUPPORTED = {
    "check_val_every_n_epoch": "the facade validates after every epoch",
    "val_check_interval": "the facade validates after every epoch",
    "limit_train_batches": "use max_steps, or pass a smaller loader",
    "limit_val_batches": "pass a smaller validation loader",
    "limit_test_batches": "pass a smaller test loader",
    "fast_dev_run": "use max_steps: 1 for a smoke test",
    "min_epochs": "no minimum epoch count in the facade",
    "max_time": "use the timer callback (seconds) in the spec",
    "overfit_batches": "no equivalent",
    "reload_dataloaders_every_n_epochs": "no equivalent",
    "gradient_clip_algorithm": "only norm clipping (gradient_clip_norm)",
}
CALLBACK_CLASSES = {"EarlyStopping", "ModelCheckpoint", "LearningRateMonitor", "TQDMProgressBar", "RichProgressBar",
                    "ModelSummary", "RichModelSummary"}
LOGGERS = {"CSVLogger", "TensorBoardLogger", "MLFlowLogger", "WandbLogger", "CometLogger", "NeptuneLogger"}
RESULT_ATTRS = {"callback_metrics", "logged_metrics", "progress_bar_metrics"}
# Layers of models on N-D inputs (images, sequences, token ids): reported with the conversion (layout note).
ND_LAYERS = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "MaxPool1d",
             "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "LSTM", "GRU", "RNN", "Embedding", "Unflatten",
             "BatchNorm2d", "Dropout2d", "TransformerEncoder", "MultiheadAttention"}


class LightningRule(Rule):
    framework = "lightning"
    roots = ("pytorch_lightning", "lightning.pytorch", "lightning")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.names_used: dict[str, int] = {}

    def visit_Name(self, node: cst.Name) -> None:
        self.names_used[node.value] = self.names_used.get(node.value, 0) + 1

    # -- LightningModules ------------------------------------------------------------------------------
    def _modules(self) -> tuple[list[cst.ClassDef], list[str]]:
        """LightningModule / LightningDataModule subclasses of the file."""
        mods, dms = [], []
        for cls in self.classes:
            kinds = {self.fw_last(b.value) for b in cls.bases}
            if "LightningModule" in kinds:
                mods.append(cls)
            if "LightningDataModule" in kinds:
                dms.append(cls.name.value)
        return mods, dms

    def _check_module(self, cls: cst.ClassDef) -> tuple[list[str], Optional[tuple[str, str]], list[str]]:
        """(blocking reasons, (task, loss) from training_step, names logged with self.log)."""
        methods = {s.name.value: s for s in cls.body.body if isinstance(s, cst.FunctionDef)}
        blocking: list[str] = []
        name = cls.name.value
        manual = [a for a in self.attributes if a.attr.value == "automatic_optimization"
                  and self.class_of(a) is cls and isinstance(self.parent(a), cst.AssignTarget)]
        for a in manual:
            assign = self.parent(self.parent(a))
            if isinstance(assign, cst.Assign) and self.code(assign.value) == "False":
                self.find(a, f"{name}.automatic_optimization = False", "manual", "module.manual-optimization",
                          "manual optimization is a custom loop: the facade steps the optimizer itself; "
                          "this script stays on Lightning")
                blocking.append("manual optimization")
        if "forward" not in methods:
            self.find(cls, f"class {name}(LightningModule)", "manual", "module.no-forward",
                      "no forward(): the facade validates and predicts with model(x); add forward to migrate")
            blocking.append("no forward()")
        opt = methods.get("configure_optimizers")
        if opt is not None:
            body = self.module.code_for_node(opt)
            if "lr_scheduler" in body or "scheduler" in body.lower():
                self.find(opt, f"{name}.configure_optimizers", "manual", "module.scheduler",
                          "returns a learning-rate scheduler: the facade takes one optimizer here; move the "
                          "schedule to the spec's scheduler by hand; this script stays on Lightning")
                blocking.append("scheduler in configure_optimizers")
            else:
                self.find(opt, f"{name}.configure_optimizers", "converted", "module.configure-optimizers",
                          "honoured by the facade: its optimizer trains the model on every torch backend")
        nd = [c for c in self.calls if self.class_of(c) is cls and (self.fw_last(c.func) or "") in ND_LAYERS]
        nd += [c for c in self.calls if self.class_of(c) is cls
               and any(q.rsplit(".", 1)[-1] in ND_LAYERS and q.startswith("torch.nn") for q in self.qnames(c.func))]
        if nd:  # reported only when the file is rewritten (an unchanged file reports no conversion)
            self.find(nd[0], f"{self.code(nd[0].func)}(...) in {name}", "converted", "module.nd-input",
                      "N-D inputs (images, sequences, token ids): your model and your loaders' batches reach "
                      "the facade unchanged, in their own layout")
        step = methods.get("training_step")
        if step is not None and len(step.params.params) > 1:
            batch = step.params.params[1].name.value
            unpacked = any(isinstance(a.value, cst.Name) and a.value.value == batch and a.targets
                           and isinstance(a.targets[0].target, (cst.Tuple, cst.List))
                           for a in self._assigns_in(step))
            indexed = any(isinstance(sub.value, cst.Name) and sub.value.value == batch and self.func_of(sub) is step
                          for sub in self.subscripts)
            if not unpacked and not indexed:
                self.find(step, f"{name}.training_step", "manual", "module.unlabelled",
                          f"training_step does not unpack ({batch}) into inputs and targets: the facade validates "
                          "forward(x) against labels, so unlabelled or custom batches stay on Lightning")
                blocking.append("batches without (x, y)")
        task_loss = None
        if step is not None:
            self.find(step, f"{name}.training_step", "converted", "module.training-step",
                      "honoured by the facade: its returned loss is what is minimised")
            for call in self.calls:
                if self.func_of(call) is step or (self.class_of(call) is cls and task_loss is None):
                    for q in self.qnames(call.func):
                        if q in TORCH_LOSSES:
                            task_loss = task_loss or TORCH_LOSSES[q]
        for hook in ("validation_step", "test_step"):
            if hook in methods:
                self.find(methods[hook], f"{name}.{hook}", "converted", f"module.{hook.replace('_', '-')}",
                          "the facade scores forward() outputs with the spec's loss and metrics (val/*, test/*); "
                          "self.log calls in it are not needed")
        if "predict_step" in methods:
            self.find(methods["predict_step"], f"{name}.predict_step", "manual", "module.predict-step",
                      "the facade predicts with forward(); port predict_step's extra logic by hand")
        logged = []
        for call in self.calls:
            if (self.class_of(call) is cls and isinstance(call.func, cst.Attribute)
                    and self.code(call.func) == "self.log" and call.args):
                v = self.value(call.args[0].value)
                if isinstance(v, str):
                    logged.append(v)
        return blocking, task_loss, logged

    def _assigns_in(self, fn: cst.FunctionDef) -> list[cst.Assign]:
        out = []
        for stmt in fn.body.body:
            if isinstance(stmt, cst.SimpleStatementLine):
                out += [s for s in stmt.body if isinstance(s, cst.Assign)]
        return out

    # -- the plan --------------------------------------------------------------------------------------
    def plan(self) -> None:
        for call in self.calls:
            if self.fw_last(call.func) == "LightningCLI":
                self.find(call, f"{self.code(call.func)}(...)", "manual", "cli.lightning-cli",
                          "LightningCLI builds the Trainer from the command line and config files: the script stays "
                          "on Lightning; to use the facade, write the config's trainer settings as a spec "
                          "(unified run spec.yaml) or construct UnifiedTrainer yourself")
        for attr in self.attributes:
            if (attr.attr.value in ("fit", "validate", "test", "predict") and isinstance(attr.value, cst.Attribute)
                    and attr.value.attr.value == "trainer" and isinstance(attr.value.value, cst.Name)):
                cli = self.follow(attr.value.value, attr)
                if isinstance(cli, cst.Call) and self.fw_last(cli.func) == "LightningCLI":
                    self.find(attr, f"{self.code(attr)}(...)", "manual", "cli.trainer",
                              "the LightningCLI's Trainer: stays on Lightning (see the LightningCLI entry)")
        mods, datamodules = self._modules()
        blocking: list[str] = []
        task_loss: Optional[tuple[str, str]] = None
        logged: list[str] = []
        trainers = [c for c in self.calls if self.fw_last(c.func) == "Trainer"]
        for cls in mods:
            b, tl, lg = self._check_module(cls)
            blocking += b
            task_loss = task_loss or tl
            logged += lg
        if not trainers:
            # A module without a Trainer in this file: only what blocks a migration is worth reporting.
            self.findings = [f for f in self.findings if f.action != "converted"]
            return
        seeds = [c for c in self.calls if self.fw_last(c.func) == "seed_everything"]
        for t in trainers:
            name = self.assigned_name(t)
            if blocking or name is None:
                why = ("; ".join(dict.fromkeys(blocking)) if blocking
                       else "the Trainer is not assigned to a name")
                self.find(t, f"{self.code(t.func)}(...)", "manual", "trainer.left-on-lightning",
                          f"not migrated ({why}): training stays on Lightning")
                continue
            self._migrate_trainer(t, name, seeds, datamodules, task_loss, logged)

    def _migrate_trainer(self, call: cst.Call, name: str, seeds: list[cst.Call], datamodules: list[str],
                         task_loss: Optional[tuple[str, str]], logged: list[str]) -> None:
        trainer: dict[str, Any] = {}
        callbacks: list[dict[str, Any]] = []
        logging: dict[str, Any] = {}
        keys_read: list[str] = []
        ctor = self.code(call.func)
        for kw, value, _ in self.keywords(call):
            construct = f"{ctor}({kw}=)"
            v = self.value(value)
            if kw in DIRECT:
                trainer[DIRECT[kw]] = v
                self.find(value, construct, "converted", f"trainer.{kw}", f"spec trainer.{DIRECT[kw]}")
            elif kw == "gradient_clip_val":
                trainer["gradient_clip_norm"] = v
                self.find(value, construct, "converted", "trainer.gradient_clip_val", "spec trainer.gradient_clip_norm")
            elif kw == "precision":
                p = str(v)
                if p in ("32", "32-true"):
                    self.find(value, construct, "converted", "trainer.precision", "32-bit: the facade's default")
                else:
                    trainer["precision"] = p
                    self.find(value, construct, "converted", "trainer.precision", f"spec trainer.precision {p!r}")
            elif kw == "gpus":
                if v in (0, None, "0", [], "") :
                    self.find(value, construct, "converted", "trainer.gpus", "legacy gpus=0: CPU, the facade's device")
                else:
                    self.find(value, construct, "unsupported", "trainer.gpus",
                              "legacy gpus=: the facade trains on CPU here (GPUs are not supported yet)")
            elif kw == "accelerator":
                if v in ("cpu", "auto"):
                    self.find(value, construct, "converted", "trainer.accelerator", "the facade chooses the device (CPU)")
                else:
                    self.find(value, construct, "unsupported", "trainer.accelerator",
                              f"accelerator {self.src(v)}: the facade trains on CPU here")
            elif kw == "devices":
                if v in (1, "1", "auto", [0]) :
                    self.find(value, construct, "converted", "trainer.devices", "one device: the facade's default")
                else:
                    self.find(value, construct, "unsupported", "trainer.devices",
                              "several devices: multi-process training is not supported by the facade yet")
            elif kw == "strategy":
                if v in ("auto", None):
                    self.find(value, construct, "converted", "trainer.strategy", "single process: the default")
                else:
                    self.find(value, construct, "unsupported", "trainer.strategy",
                              f"strategy {self.src(v)}: multi-process training is not supported by the facade yet")
            elif kw == "default_root_dir":
                logging["dir"] = v
                self.find(value, construct, "converted", "trainer.default_root_dir", "spec logging.dir")
            elif kw == "callbacks":
                callbacks += self._callbacks(value, ctor, keys_read)
            elif kw == "logger":
                logging.update(self._loggers(value, ctor))
            elif kw in NO_EFFECT:
                self.find(value, construct, "converted", f"trainer.{kw}", f"dropped: {NO_EFFECT[kw]}")
            elif kw in UNSUPPORTED:
                self.find(value, construct, "unsupported", f"trainer.{kw}", f"not carried over: {UNSUPPORTED[kw]}")
            else:
                self.find(value, construct, "unsupported", "trainer.other",
                          f"Trainer({kw}=) has no facade equivalent; not carried over")
        for a in call.args:
            if a.keyword is None:
                self.find(a, f"{ctor}(<positional>)", "manual", "trainer.positional",
                          "positional Trainer arguments are not mapped; pass them by keyword")
        if "max_epochs" not in trainer and "max_steps" not in trainer:
            trainer["max_epochs"] = 1000  # Lightning's default when neither is given
        elif "max_epochs" not in trainer:
            trainer["max_epochs"] = None
        seed = None
        for s in seeds:
            v = self.value(s.args[0].value) if s.args else 42
            seed = v
            self.find(s, f"{self.code(s.func)}()", "converted", "seed_everything",
                      "kept (it seeds your model's construction) and copied to spec seed")
        # the Trainer's own methods and attributes
        self._uses(name, call, datamodules, keys_read)
        keys_read += [k for k in (facade_key(n) for n in logged) if k]
        task, loss = task_loss or ("classification", "cross_entropy")
        if task_loss is None and not self._modules()[0]:
            self.find(call, f"{ctor}(...)", "converted", "trainer.task",
                      "the LightningModule is not in this file: spec assumes task classification (cross_entropy) "
                      "for val/loss and the metrics; set task/loss if that is wrong")
        elif task_loss is None:
            self.find(call, f"{ctor}(...)", "manual", "trainer.task",
                      "no torch loss found in training_step: the spec assumes task classification (cross_entropy) "
                      "for validation (val/loss, metrics on forward(x) against y); set the spec's task/loss, the "
                      "migrated run fails in validation if that is wrong")
        for k in unknown_metric_keys(task, keys_read):
            self.find(call, f"{ctor}(...)", "manual", "trainer.metric",
                      f"{k} does not apply to task {task}; check the spec's metrics")
        spec = spec_dict(name=safe_name(self.stem), seed=seed, task=task, loss=loss,
                         metrics=metrics_for(task, keys_read), trainer=trainer, callbacks=callbacks,
                         logging=logging)
        self.specs.append({"line": self.pos(call)[0], "backend": "lightning", "spec": spec})
        stmt = self.stmt_of(call)
        assert stmt is not None
        self.replace[call] = self.expr(codegen.trainer_call(spec, "lightning", self.indent(stmt)))
        self.imports_needed.add(("unified", "UnifiedTrainer"))
        self.find(call, f"{ctor}(...)", "converted", "trainer.construct",
                  f"UnifiedTrainer(spec, backend=\"lightning\") (spec name {spec['name']!r})")

    def _callbacks(self, value: cst.BaseExpression, ctor: str, keys_read: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        listed = self.follow(value, value)
        if isinstance(listed, (cst.List, cst.Tuple)) and listed is not value and isinstance(value, cst.Name):
            if self.names_used.get(value.value, 0) == 2 and isinstance(self.parent(listed), cst.Assign):
                stmt = self.stmt_of(listed)
                if stmt is not None:
                    self.remove(stmt)
            value = listed
        if not isinstance(value, (cst.List, cst.Tuple)):
            self.find(value, f"{ctor}(callbacks=)", "manual", "callbacks.dynamic",
                      "callbacks is not a literal list: map each one to the spec's callbacks by hand")
            return out
        for el in value.elements:
            node = self.follow(el.value, el.value)
            named = el.value.value if isinstance(el.value, cst.Name) else None
            kind = self.fw_last(node.func) if isinstance(node, cst.Call) else None
            where = el.value
            if kind not in CALLBACK_CLASSES or not isinstance(node, cst.Call):
                self.find(where, f"callbacks=[{self.code(el.value)}]", "manual", "callbacks.custom",
                          "a Lightning callback has no facade equivalent: port it to a unified.callbacks.Callback "
                          "and pass it as UnifiedTrainer(..., callbacks=[...])")
                stmt = self.stmt_of(value)
                if stmt is not None:
                    self.mark_todo(stmt, f"callback {self.code(el.value)} is not run by the facade: port it to a "
                                         "unified.callbacks.Callback, pass UnifiedTrainer(..., callbacks=[...])")
                continue
            construct = f"{self.code(node.func)}()"
            entry = self._callback(kind, node, construct, keys_read)
            if entry is not None:
                out.append(entry)
                if named and self.names_used.get(named, 0) == 2:  # its assignment and this use
                    stmt = self.stmt_of(node)
                    if stmt is not None and isinstance(self.parent(node), cst.Assign):
                        self.remove(stmt)
        return out

    def _report_unmapped(self, kind: str, node: cst.Call, construct: str) -> None:
        """Every argument of a converted EarlyStopping / ModelCheckpoint is mapped or reported."""
        known = {"EarlyStopping": {"monitor", "mode", "patience", "min_delta", "verbose"},
                 "ModelCheckpoint": {"monitor", "mode", "save_top_k", "save_last", "every_n_epochs", "dirpath",
                                     "filename", "verbose", "auto_insert_metric_name"}}.get(kind)
        if known is None:
            return
        for kw, v, _ in self.keywords(node):
            if kw not in known:
                self.find(v, f"{construct[:-2]}({kw}=)", "unsupported", f"callbacks.{kind.lower()}",
                          "not carried over: the facade's callback has no such setting")

    def _callback(self, kind: str, node: cst.Call, construct: str, keys_read: list[str]) -> Optional[dict[str, Any]]:
        entry = self._callback_entry(kind, node, construct, keys_read)
        if entry is not None:
            self._report_unmapped(kind, node, construct)
        return entry

    def _callback_entry(self, kind: str, node: cst.Call, construct: str, keys_read: list[str]
                        ) -> Optional[dict[str, Any]]:
        if kind in ("TQDMProgressBar", "RichProgressBar", "ModelSummary", "RichModelSummary"):
            self.find(node, construct, "converted", "callbacks.progress", "dropped: the facade shows its own progress line")
            return None
        if kind == "LearningRateMonitor":
            self.find(node, construct, "converted", "callbacks.lr-monitor", "spec callback lr_monitor")
            return {"lr_monitor": {}}
        monitor_node = self.arg(node, "monitor", 0 if kind == "EarlyStopping" else 2)
        monitor = self.value(monitor_node) if monitor_node is not None else None
        cfg: dict[str, Any] = {}
        if monitor is not None:
            key = facade_key(monitor) if isinstance(monitor, str) else None
            if key is None:
                self.find(node, construct, "manual", f"callbacks.{kind.lower()}",
                          f"monitor {self.src(monitor)} has no facade key (expected e.g. val_loss, val_acc)")
                return None
            cfg["monitor"] = key
            keys_read.append(key)
            mode = self.arg(node, "mode")
            cfg["mode"] = self.value(mode) if mode is not None else ("min" if kind == "EarlyStopping" else "min")
        if kind == "EarlyStopping":
            if monitor is None:
                self.find(node, construct, "manual", "callbacks.earlystopping", "EarlyStopping without monitor")
                return None
            for k in ("patience", "min_delta"):
                n = self.arg(node, k)
                if n is not None:
                    cfg[k] = self.value(n)
            cfg.setdefault("patience", 3)
            self.find(node, construct, "converted", "callbacks.earlystopping", f"spec callback early_stopping on {cfg['monitor']}")
            return {"early_stopping": cfg}
        # ModelCheckpoint
        hint = "spec callback model_checkpoint; files go to <run_dir>/checkpoints (best.ckpt, last.ckpt)"
        if monitor is None:
            cfg.update(save_top_k=0, save_last=True)
            hint = "no monitor: keeps the last checkpoint (<run_dir>/checkpoints/last.ckpt)"
        for k in ("save_top_k", "save_last", "every_n_epochs"):
            n = self.arg(node, k)
            if n is not None and not (monitor is None and k == "save_top_k"):
                cfg[k] = self.value(n)
        if cfg.get("save_last") is None:
            cfg.pop("save_last", None)
        for k in ("dirpath", "filename"):
            if self.arg(node, k) is not None:
                hint += f"; {k}= is not used"
        self.find(node, construct, "converted", "callbacks.modelcheckpoint", hint)
        return {"model_checkpoint": cfg}

    def _loggers(self, value: cst.BaseExpression, ctor: str) -> dict[str, Any]:
        items = value.elements if isinstance(value, (cst.List, cst.Tuple)) else None
        nodes = [e.value for e in items] if items is not None else [value]
        out: dict[str, Any] = {}
        for raw in nodes:
            node = self.follow(raw, raw)
            if isinstance(node, cst.Name) and node.value in ("False", "True", "None"):
                self.find(raw, f"{ctor}(logger={node.value})", "converted", "logger.flag",
                          "dropped: the facade always writes metrics.csv and summary.json")
                continue
            kind = self.fw_last(node.func) if isinstance(node, cst.Call) else None
            if not isinstance(node, cst.Call) or kind not in LOGGERS:
                self.find(raw, f"{ctor}(logger=)", "manual", "logger.custom", "unknown logger: not carried over")
                continue
            construct = f"{self.code(node.func)}()"
            if kind == "CSVLogger":
                save_dir = self.arg(node, "save_dir", 0)
                if save_dir is not None:
                    out["dir"] = self.value(save_dir)
                self.find(node, construct, "converted", "logger.csv",
                          "the run directory's metrics.csv (spec logging.dir = save_dir)")
            elif kind in ("TensorBoardLogger", "MLFlowLogger"):
                which = "tensorboard" if kind == "TensorBoardLogger" else "mlflow"
                out.setdefault("loggers", []).append(which)
                if kind == "MLFlowLogger":
                    mlflow = {k2: self.value(n) for k, k2 in (("tracking_uri", "tracking_uri"),
                                                              ("experiment_name", "experiment"))
                              if (n := self.arg(node, k)) is not None}
                    if mlflow:
                        out["mlflow"] = mlflow
                    hint = "spec logging.loggers: mlflow (the facade logs the same keys on every backend)"
                else:
                    save_dir = self.arg(node, "save_dir", 0)
                    if save_dir is not None and "dir" not in out:
                        out["dir"] = self.value(save_dir)
                    hint = "spec logging.loggers: tensorboard (event files in <run_dir>/tensorboard)"
                self.find(node, construct, "converted", f"logger.{which}", hint)
            else:
                self.find(node, construct, "unsupported", f"logger.{kind.lower()}",
                          f"{kind} is not supported by the facade yet; metrics.csv has the same values")
            named = raw.value if isinstance(raw, cst.Name) else None
            if named and self.names_used.get(named, 0) == 2 and isinstance(self.parent(node), cst.Assign):
                stmt = self.stmt_of(node)
                if stmt is not None:
                    self.remove(stmt)
        return out

    # -- trainer.fit / validate / test / predict and result reads ---------------------------------------
    def _loader_of_dm(self, dm: cst.BaseExpression, which: str) -> str:
        return f"{self.code(dm)}.{which}_dataloader()"

    def _is_datamodule(self, node: Optional[cst.BaseExpression], datamodules: list[str]) -> bool:
        value = self.follow(node, node) if node is not None else None
        if isinstance(value, cst.Call):
            callee = value.func.value if isinstance(value.func, cst.Name) else None
            return callee in datamodules or self.fw_last(value.func) == "LightningDataModule"
        return False

    def _uses(self, name: str, ctor: cst.Call, datamodules: list[str], keys_read: list[str]) -> None:
        start = self.pos(ctor)[0]
        for call in self.calls:
            if self.receiver(call) != name or self.pos(call)[0] < start:
                continue
            meth = self.method(call)
            construct = f"{name}.{meth}()"
            if meth == "fit":
                self._fit(call, construct, datamodules)
            elif meth in ("validate", "test"):
                split = "val" if meth == "validate" else "test"
                loader = self.arg(call, "dataloaders", 1)
                dm = self.arg(call, "datamodule", 4 if meth == "validate" else 4)
                if loader is not None and self._is_datamodule(loader, datamodules):
                    dm, loader = loader, None
                if dm is not None:
                    data = self._loader_of_dm(dm, split)
                elif loader is not None:
                    data = self.code(loader)
                elif split == "test":
                    self.find(call, construct, "manual", "trainer.test",
                              "test() without data: pass the test loader to trainer.evaluate('test', data=...)")
                    continue
                else:
                    data = None
                inner = f'{name}.evaluate("{split}"' + (f", data={data})" if data else ")")
                new = inner if self.is_statement(call) else f"[{inner}]"
                self.replace[call] = self.expr(new)
                self.find(call, construct, "converted", f"trainer.{meth}",
                          f"{inner}: a dict of {split}/* keys (wrapped in a list where the result is used)")
                result = self.assigned_name(call)
                if result is not None:
                    self._result_keys(result, call, keys_read)
            elif meth == "predict":
                loader = self.arg(call, "dataloaders", 1)
                dm = self.arg(call, "datamodule", 2)
                if loader is not None and self._is_datamodule(loader, datamodules):
                    dm, loader = loader, None
                data = self._loader_of_dm(dm, "predict") if dm is not None else (self.code(loader) if loader else None)
                if data is None:
                    self.find(call, construct, "manual", "trainer.predict", "predict() without data")
                    continue
                self.replace[call] = self.expr(f"{name}.predict({data})")
                self.find(call, construct, "converted", "trainer.predict",
                          "returns one numpy array of outputs, not a list of per-batch tensors")
            else:
                stmt = self.stmt_of(call)
                self.find(call, construct, "manual", "trainer.method",
                          f"Trainer.{meth}() has no facade equivalent")
                if stmt is not None:
                    self.mark_todo(stmt, f"Trainer.{meth}() has no UnifiedTrainer equivalent")
        # attribute reads: trainer.callback_metrics[...], trainer.current_epoch, ...
        for attr in self.attributes:
            if not (isinstance(attr.value, cst.Name) and attr.value.value == name) or self.pos(attr)[0] < start:
                continue
            parent = self.parent(attr)
            if isinstance(parent, cst.Call) and parent.func is attr:
                continue  # a method call, handled above
            field = attr.attr.value
            if field in RESULT_ATTRS:
                self._metrics_read(attr, name, keys_read)
            elif field in ("current_epoch", "global_step"):
                new = "epochs" if field == "current_epoch" else "global_step"
                self.replace[attr] = self.expr(f"{name}.result.{new}")
                self.find(attr, f"{name}.{field}", "converted", "trainer.counters", f"{name}.result.{new}")
            else:
                stmt = self.stmt_of(attr)
                self.find(attr, f"{name}.{field}", "manual", "trainer.attribute",
                          f"Trainer.{field} has no facade equivalent (see {name}.result / {name}.run_dir)")
                if stmt is not None:
                    self.mark_todo(stmt, f"Trainer.{field} has no UnifiedTrainer equivalent ({name}.result, {name}.run_dir)")

    def _result_keys(self, result: str, call: cst.Call, keys_read: list[str]) -> None:
        """``res = trainer.test(...)`` then ``res[0]["test_acc"]``: map the string keys read through ``res``."""
        for sub in self.subscripts:
            if (self.root_name(sub) != result or self.pos(sub)[0] < self.pos(call)[0] or len(sub.slice) != 1
                    or not isinstance(sub.slice[0].slice, cst.Index)):
                continue
            key = self.value(sub.slice[0].slice.value)
            if not isinstance(key, str):
                continue
            new = facade_key(key)
            if new is None:
                self.find(sub, f"{self.code(sub)}", "manual", "metrics.key", f"{self.src(key)} has no facade key")
                stmt = self.stmt_of(sub)
                if stmt is not None:
                    self.mark_todo(stmt, f"{self.src(key)} is not a facade key")
                continue
            keys_read.append(new)
            self.replace[sub.slice[0].slice.value] = self.key_node(sub.slice[0].slice.value, new)
            self.find(sub, self.code(sub), "converted", "metrics.key", f'["{new}"]')

    def _metrics_read(self, attr: cst.Attribute, name: str, keys_read: list[str]) -> None:
        parent = self.parent(attr)
        construct = f"{name}.{attr.attr.value}"
        base = f"{name}.result.metrics"
        if isinstance(parent, cst.Subscript) and parent.value is attr and len(parent.slice) == 1:
            key_node = parent.slice[0].slice
            key = self.value(key_node.value) if isinstance(key_node, cst.Index) else None
            new_key = facade_key(key) if isinstance(key, str) else None
            if new_key is None:
                self.find(parent, f"{construct}[{self.src(key)}]", "manual", "metrics.key",
                          f"{self.src(key)} has no facade key; read {base}[...] with a val/* or train/* key")
                self.replace[attr] = self.expr(base)
                stmt = self.stmt_of(parent)
                if stmt is not None:
                    self.mark_todo(stmt, f"{self.src(key)} is not a facade key (see {base})")
                return
            keys_read.append(new_key)
            new = f"{base}[{self.key_node(key_node.value, new_key).value}]"
            target: cst.CSTNode = parent
            up = self.parent(parent)
            if isinstance(up, cst.Attribute) and up.attr.value == "item":
                call = self.parent(up)
                if isinstance(call, cst.Call) and not call.args:
                    target = call  # a float has no .item(): drop it
            self.replace[target] = self.expr(new)
            self.find(parent, f"{construct}[{self.src(key)}]", "converted", "metrics.key", f'{new} (FitResult.metrics)')
            return
        if isinstance(parent, cst.Attribute) and parent.attr.value == "get":
            call = self.parent(parent)
            if isinstance(call, cst.Call) and call.args:
                key = self.value(call.args[0].value)
                new_key = facade_key(key) if isinstance(key, str) else None
                if new_key is not None:
                    keys_read.append(new_key)
                    rest = "".join(", " + self.code(a.value) for a in call.args[1:])
                    self.replace[call] = self.expr(f"{base}.get({self.key_node(call.args[0].value, new_key).value}{rest})")
                    self.find(call, f"{construct}.get({self.src(key)})", "converted", "metrics.key", f"{base}.get(\"{new_key}\")")
                    return
        self.replace[attr] = self.expr(base)
        self.find(attr, construct, "converted", "metrics.dict",
                  f"{base}: keys are the facade's (val/loss, val/accuracy, train/loss ...)")
        if isinstance(parent, cst.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0].target, cst.Name):
            self.alias_keys(parent.targets[0].target.value, attr, None, keys_read)

    def _fit(self, call: cst.Call, construct: str, datamodules: list[str]) -> None:
        name = self.receiver(call)
        model = self.arg(call, "model", 0)
        train = self.arg(call, "train_dataloaders", 1)
        val = self.arg(call, "val_dataloaders", 2)
        dm = self.arg(call, "datamodule", 3)
        ckpt = self.arg(call, "ckpt_path", 4)
        if train is not None and self._is_datamodule(train, datamodules):
            dm, train = train, None
        if model is None:
            self.find(call, construct, "manual", "trainer.fit", "fit() without a model")
            return
        before: list[cst.BaseStatement] = []
        if dm is not None:
            d = self.code(dm)
            data = f"({d}.train_dataloader(), {d}.val_dataloader())"
            before = [self.stmt(f"{d}.prepare_data()"), self.stmt(f'{d}.setup("fit")')]
            self.find(dm, f"{construct}(datamodule=)", "converted", "trainer.fit.datamodule",
                      "the datamodule's train/val loaders are passed as data (prepare_data and setup called first)")
        elif train is not None:
            data = f"({self.code(train)}, {self.code(val)})" if val is not None else self.code(train)
        elif any(a.star == "*" for a in call.args[1:2]):
            data = self.code(call.args[1].value)  # fit(model, *loaders()): the (train, val) pair itself
        else:
            self.find(call, construct, "manual", "trainer.fit", "fit() without data")
            return
        if ckpt is not None:
            self.find(ckpt, f"{construct}(ckpt_path=)", "unsupported", "trainer.fit.ckpt-path",
                      "resuming from a checkpoint is not supported by the facade yet: training starts fresh")
        self.replace[call] = self.expr(f"{name}.fit(model={self.code(model)}, data={data})")
        self.find(call, construct, "converted", "trainer.fit",
                  "fit(model=..., data=(train, val)): the LightningModule's training_step and configure_optimizers are used")
        if before:
            stmt = self.stmt_of(call)
            if stmt is not None:
                self.before.setdefault(stmt, []).extend(before)

