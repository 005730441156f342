"""Keras rules: ``model.compile``/``fit``/``evaluate``/``predict`` on Keras models, Keras callbacks,
``history.history[...]`` reads; custom loops (``tf.GradientTape``, an overridden ``train_step``) are
reported and the file is left on Keras."""

from __future__ import annotations

from typing import Any, Optional

import libcst as cst

from unified.migrate import codegen
from unified.migrate.keys import facade_key, mode_for
from unified.migrate.mapping import metrics_for, safe_name, spec_dict
from unified.migrate.rule import Rule

MODEL_CTORS = {"Sequential", "Model", "load_model"}
# Keras optimizer -> (spec name, Keras defaults in spec terms, {keras kwarg: spec key})
OPTIMIZERS = {
    "adam": ("adam", {"lr": 0.001, "eps": 1e-7}, {"learning_rate": "lr", "epsilon": "eps", "weight_decay": "weight_decay"}),
    "adamw": ("adamw", {"lr": 0.001, "eps": 1e-7, "weight_decay": 0.004},
              {"learning_rate": "lr", "epsilon": "eps", "weight_decay": "weight_decay"}),
    "sgd": ("sgd", {"lr": 0.01}, {"learning_rate": "lr", "momentum": "momentum", "nesterov": "nesterov",
                                  "weight_decay": "weight_decay"}),
    "rmsprop": ("rmsprop", {"lr": 0.001, "alpha": 0.9, "eps": 1e-7},
                {"learning_rate": "lr", "rho": "alpha", "momentum": "momentum", "epsilon": "eps",
                 "weight_decay": "weight_decay"}),
}
LOSSES = {
    "sparse_categorical_crossentropy": ("classification", "cross_entropy"),
    "SparseCategoricalCrossentropy": ("classification", "cross_entropy"),
    "binary_crossentropy": ("binary", "bce_with_logits"), "BinaryCrossentropy": ("binary", "bce_with_logits"),
    "mse": ("regression", "mse"), "mean_squared_error": ("regression", "mse"), "MeanSquaredError": ("regression", "mse"),
    "mae": ("regression", "mae"), "mean_absolute_error": ("regression", "mae"), "MeanAbsoluteError": ("regression", "mae"),
    "huber": ("regression", "huber"), "Huber": ("regression", "huber"),
}
METRIC_CLASSES = {"SparseCategoricalAccuracy": "accuracy", "BinaryAccuracy": "accuracy", "Accuracy": "accuracy",
                  "AUC": "auroc", "MeanSquaredError": "mse", "MeanAbsoluteError": "mae", "R2Score": "r2",
                  "Precision": "precision_macro", "Recall": "recall_macro", "F1Score": "f1_macro"}
# Layers of models on N-D inputs (images, sequences, token ids): reported with the converted fit (layout note).
ND_LAYERS = {"Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose", "SeparableConv2D", "DepthwiseConv2D", "MaxPooling1D",
             "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
             "GlobalMaxPooling1D", "GlobalMaxPooling2D", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "Flatten",
             "Reshape", "Embedding", "TimeDistributed", "Conv1DTranspose", "UpSampling2D", "MultiHeadAttention"}
# Preprocessing layers taking strings: the facade feeds numeric arrays only.
STRING_LAYERS = {"TextVectorization", "StringLookup"}
# What a model can have that the facade cannot train (reported when the file fits it).
MODEL_LIMITS = {"keras.model.string-input", "keras.model.per-step-output", "keras.model.multi-io"}
FIT_UNSUPPORTED = {"steps_per_epoch", "validation_steps", "class_weight", "sample_weight", "initial_epoch",
                   "validation_freq", "validation_batch_size"}


class KerasRule(Rule):
    framework = "keras"
    roots = ("keras", "tensorflow.keras", "tf_keras", "tensorflow")

    def _is_ctor(self, call: cst.CSTNode) -> bool:
        if not isinstance(call, cst.Call):
            return False
        name = self.fw(call.func)
        return bool(name) and (name.rsplit(".", 1)[-1] in MODEL_CTORS and "keras" in (name + str(self.qnames(call.func)))
                               or name.startswith(("applications.", "keras.applications.")))

    def plan(self) -> None:
        blocking: list[str] = []
        for call in self.calls:
            if self.fw_last(call.func) == "GradientTape":
                self.find(call, f"{self.code(call.func)}()", "manual", "custom-loop.gradient-tape",
                          "a GradientTape loop is custom training: not guessed at; this file stays on Keras")
                blocking.append("GradientTape loop")
        nd = [c for c in self.calls if (self.fw_last(c.func) or "") in ND_LAYERS]
        shaped = [c for c in self.calls if self.fw_last(c.func) in ("Input", "InputLayer")
                  and isinstance(self.arg(c, "shape", 0), cst.Tuple)
                  and len(self.arg(c, "shape", 0).elements) > 1]
        shaped += [c for c in self.calls if isinstance(self.arg(c, "input_shape"), cst.Tuple)
                   and len(self.arg(c, "input_shape").elements) > 1 and self.fw(c.func)]
        nd_model = (nd + shaped)[0] if nd or shaped else None
        blocking += self._not_faithful()
        model_classes = []
        for cls in self.classes:
            if any(self.fw_last(b.value) in ("Model", "Sequential") for b in cls.bases):
                model_classes.append(cls.name.value)
                for s in cls.body.body:
                    if isinstance(s, cst.FunctionDef) and s.name.value in ("train_step", "test_step"):
                        self.find(s, f"{cls.name.value}.{s.name.value}", "manual", f"custom-loop.{s.name.value.replace('_', '-')}",
                                  f"an overridden {s.name.value} is custom training logic: not guessed at; "
                                  "this file stays on Keras")
                        blocking.append(f"overridden {s.name.value}")
        builders = {name for name, fn in self.functions.items()
                    if any(self._is_ctor(c) and self.func_of(c) is fn for c in self.calls)}
        models: set[str] = set()
        for name, pairs in self.assigns.items():
            for _, value in pairs:
                if self._is_ctor(value) or (isinstance(value, cst.Call) and isinstance(value.func, cst.Name)
                                            and value.func.value in builders | set(model_classes)):
                    models.add(name)
        # A model built elsewhere (an imported function) is a Keras model when compile() gets Keras objects.
        local = set(self.functions) | {c.name.value for c in self.classes}
        for c in self.calls:
            recv = self.receiver(c)
            if self.method(c) == "compile" and recv not in models and recv not in local:
                origin = [v for _, v in self.assigns.get(recv or "", [])]
                if any(isinstance(v, cst.Call) and isinstance(v.func, cst.Name) and v.func.value in local for v in origin):
                    continue
                if any(isinstance(a.value, cst.Call) and self.fw(a.value.func) for a in c.args):
                    models.add(recv)
        calls = [c for c in self.calls if self.receiver(c) in models
                 and self.method(c) in ("compile", "fit", "evaluate", "predict")]
        fits = [c for c in calls if self.method(c) == "fit"]
        if not fits:  # nothing to migrate: only custom training loops are worth reporting
            self.findings = [f for f in self.findings if f.action != "converted" and f.rule not in MODEL_LIMITS]
            return
        if blocking:
            for c in fits:
                self.find(c, f"{self.code(c.func)}()", "manual", "fit.left-on-keras",
                          f"not migrated ({'; '.join(dict.fromkeys(blocking))}): training stays on Keras")
            return
        compiles = [c for c in calls if self.method(c) == "compile"]
        seeds = [c for c in self.calls if self.fw(c.func) in ("utils.set_random_seed", "random.set_seed",
                                                               "keras.utils.set_random_seed")]
        converted = False
        for i, fit in enumerate(fits):
            earlier = [c for c in compiles if self.pos(c)[0] < self.pos(fit)[0]]
            compile_call = (earlier or compiles or [None])[-1]
            nxt = fits[i + 1] if i + 1 < len(fits) else None
            later = [c for c in calls if self.method(c) in ("evaluate", "predict") and self.pos(c)[0] > self.pos(fit)[0]
                     and (nxt is None or self.pos(c)[0] < self.pos(nxt)[0])]
            if not self._migrate_fit(fit, compile_call, later, seeds):
                continue
            converted = True
            if compile_call is not None:
                stmt = self.stmt_of(compile_call)
                if stmt is not None and self.is_statement(compile_call):
                    self.remove(stmt)
        if converted and nd_model is not None:
            self.find(nd_model, f"{self.code(nd_model.func)}(...)", "converted", "model.nd-input",
                      "N-D inputs (images, sequences, token ids): your model and its arrays reach the facade "
                      "unchanged, in the model's own layout (Keras channels-last images stay N,H,W,C)")

    # -- compile -----------------------------------------------------------------------------------------
    def _compile(self, call: Optional[cst.Call]) -> tuple[dict[str, Any], str, str, Optional[list[str]]]:
        """(optimizer, task, loss, metrics) from ``model.compile``; loss is None when it blocks the migration."""
        if call is None:
            return {}, "classification", "", None
        construct = f"{self.code(call.func)}()"
        opt_node = self.arg(call, "optimizer", 0)
        optimizer: dict[str, Any] = {}
        if opt_node is not None:
            optimizer = self._optimizer(opt_node)
        else:
            optimizer = {"name": "rmsprop", "lr": 0.001, "alpha": 0.9, "eps": 1e-7}  # Keras's default
        loss_node = self.arg(call, "loss", 1)
        task, loss = "classification", ""
        if loss_node is None:
            self.find(call, construct, "manual", "compile.loss", "compile() without a loss")
        else:
            v = self.value(loss_node)
            key = v if isinstance(v, str) else (self.fw_last(loss_node.func) if isinstance(loss_node, cst.Call) else None)
            if key in LOSSES:
                task, loss = LOSSES[key]
                self.find(loss_node, f"compile(loss={self.code(loss_node)})", "converted", "compile.loss",
                          f"spec task {task}, loss {loss} (a softmax/sigmoid output layer is handled)")
            elif key in ("categorical_crossentropy", "CategoricalCrossentropy"):
                self.find(loss_node, f"compile(loss={self.code(loss_node)})", "manual", "compile.loss",
                          "one-hot targets: the facade takes class indices; use sparse_categorical_crossentropy "
                          "and y.argmax(1), then migrate again")
            else:
                self.find(loss_node, f"compile(loss={self.code(loss_node)})", "manual", "compile.loss",
                          "loss without a facade equivalent (cross_entropy, bce_with_logits, mse, mae, huber)")
        metrics: Optional[list[str]] = None
        m_node = self.arg(call, "metrics", 2)
        if m_node is not None:
            metrics = []
            elements = m_node.elements if isinstance(m_node, (cst.List, cst.Tuple)) else []
            for el in elements:
                v = self.value(el.value)
                name = (facade_key(v, "val") if isinstance(v, str) else None)
                metric = name.partition("/")[2] if name else None
                if metric is None and isinstance(el.value, cst.Call):
                    metric = METRIC_CLASSES.get(self.fw_last(el.value.func) or "")
                if metric is None or metric == "loss":
                    self.find(el.value, f"compile(metrics=[{self.code(el.value)}])", "unsupported", "compile.metrics",
                              "no facade metric of that name; not carried over")
                else:
                    metrics.append(metric)
                    self.find(el.value, f"compile(metrics=[{self.code(el.value)}])", "converted", "compile.metrics",
                              f"spec metric {metric} (val/{metric})")
        for kw, value, _ in self.keywords(call):
            if kw not in ("optimizer", "loss", "metrics"):
                self.find(value, f"compile({kw}=)", "unsupported", "compile.other", "not carried over")
        self.find(call, construct, "converted", "compile", "its settings go to the spec; the facade compiles the model")
        return optimizer, task, loss, metrics

    def _optimizer(self, node: cst.BaseExpression) -> dict[str, Any]:
        node = self.follow(node, node) or node
        v = self.value(node)
        construct = f"compile(optimizer={self.code(node)})"
        if isinstance(v, str):
            key = v.lower()
            if key in OPTIMIZERS:
                name, defaults, _ = OPTIMIZERS[key]
                self.find(node, construct, "converted", "compile.optimizer",
                          f"spec optimizer {name} with Keras's defaults (PyTorch's update rule)")
                return {"name": name, **defaults}
        elif isinstance(node, cst.Call):
            cls = (self.fw_last(node.func) or "").lower()
            if cls in OPTIMIZERS:
                name, defaults, kws = OPTIMIZERS[cls]
                out = {"name": name, **defaults}
                first = self.arg(node, "learning_rate", 0)
                if first is not None:
                    out["lr"] = self.value(first)
                for kw, value, _ in self.keywords(node):
                    if kw in kws and kw != "learning_rate":
                        out[kws[kw]] = self.value(value)
                    elif kw != "learning_rate":
                        self.find(value, f"{self.code(node.func)}({kw}=)", "unsupported", "compile.optimizer",
                                  "optimizer argument not carried over")
                self.find(node, construct, "converted", "compile.optimizer",
                          f"spec optimizer {name} (PyTorch's update rule, Keras's defaults)")
                return out
        self.find(node, construct, "unsupported", "compile.optimizer",
                  "optimizer without a facade equivalent (sgd, adam, adamw, rmsprop): the spec's adam is used")
        return {}

    # -- fit and what follows ---------------------------------------------------------------------------------
    def _migrate_fit(self, fit: cst.Call, compile_call: Optional[cst.Call], later: list[cst.Call],
                     seeds: list[cst.Call]) -> bool:
        model = self.receiver(fit)
        construct = f"{self.code(fit.func)}()"
        stmt = self.stmt_of(fit)
        if stmt is None or not isinstance(stmt, cst.SimpleStatementLine):
            self.find(fit, construct, "manual", "fit", "fit() inside an expression: not migrated")
            return False
        self.loggers: list[str] = []
        optimizer, task, loss, metrics = self._compile(compile_call)
        if not loss:
            self.find(fit, construct, "manual", "fit.left-on-keras",
                      "not migrated: no compile() with a loss the facade has (see the compile entries)")
            return False
        x = self.arg(fit, "x", 0)
        y = self.arg(fit, "y", 1)
        for what, node in (("x", x), ("y", y)):
            several = self._several(node, fit)
            if several:
                self.find(fit, construct, "manual", f"fit.multi-{'input' if what == 'x' else 'output'}",
                          f"{what} is {several}: the facade trains one input array and one target array per sample; "
                          "this fit stays on Keras")
                return False
        data_cfg: dict[str, Any] = {}
        trainer: dict[str, Any] = {"max_epochs": 1}
        callbacks: list[dict[str, Any]] = []
        scheduler: Optional[dict[str, Any]] = None
        val = self.arg(fit, "validation_data")
        split = self.arg(fit, "validation_split")
        for kw, value, _ in self.keywords(fit):
            v = self.value(value)
            c = f"{self.code(fit.func)}({kw}=)"
            if kw == "epochs":
                trainer["max_epochs"] = v
                self.find(value, c, "converted", "fit.epochs", "spec trainer.max_epochs")
            elif kw == "batch_size":
                data_cfg["batch_size"] = v
                self.find(value, c, "converted", "fit.batch_size", "spec data.batch_size")
            elif kw == "shuffle":
                data_cfg["shuffle"] = v
                self.find(value, c, "converted", "fit.shuffle", "spec data.shuffle")
            elif kw == "verbose":
                if v == 0:
                    trainer["progress_bar"] = False
                self.find(value, c, "converted", "fit.verbose", "spec trainer.progress_bar")
            elif kw == "validation_split":
                data_cfg["val_fraction"] = v
                self.find(value, c, "converted", "fit.validation_split",
                          "spec data.val_fraction (a seeded random split, Keras takes the last rows)")
            elif kw == "validation_data":
                self.find(value, c, "converted", "fit.validation_data", "passed as the val split of fit(data=...)")
            elif kw == "callbacks":
                callbacks, scheduler = self._callbacks(value)
            elif kw in ("x", "y"):
                continue
            else:
                self.find(value, c, "unsupported", f"fit.{kw}", "not carried over")
        if x is None:
            self.find(fit, construct, "manual", "fit", "fit() without data")
            return False
        if val is None and split is None:
            data_cfg["val_fraction"] = 0.0
        if y is None and isinstance(self.follow(x, fit), cst.Call):
            batch = self._batch_size_of(self.follow(x, fit))
            if batch is not None and "batch_size" not in data_cfg:
                data_cfg["batch_size"] = batch
        train = f"({self.code(x)}, {self.code(y)})" if y is not None else self.code(x)
        data = f"({train}, {self.code(val)})" if val is not None else train
        seed = None
        for s in seeds:
            if s.args:
                seed = self.value(s.args[0].value)
                self.find(s, f"{self.code(s.func)}()", "converted", "seed", "kept (it seeds your model's weights) and copied to spec seed")
        keys_read = self._history_reads(fit)
        spec = spec_dict(name=safe_name(self.stem), seed=seed, task=task, loss=loss,
                         metrics=metrics_for(task, keys_read, metrics), data=data_cfg, optimizer=optimizer,
                         trainer=trainer, callbacks=callbacks,
                         logging={"loggers": self.loggers} if self.loggers else None)
        if scheduler:
            spec["scheduler"] = scheduler
        self.specs.append({"line": self.pos(fit)[0], "backend": "keras", "spec": spec})
        tname = self.free_name("trainer")
        indent = self.indent(stmt)
        ctor = self.stmt(f"{tname} = {codegen.trainer_call(spec, 'keras', indent)}")
        self.before.setdefault(stmt, []).append(ctor)
        self.replace[fit] = self.expr(f"{tname}.fit(model={model}, data={data})")
        self.imports_needed.add(("unified", "UnifiedTrainer"))
        self.find(fit, construct, "converted", "fit",
                  f"{tname} = UnifiedTrainer(spec, backend=\"keras\"); {tname}.fit(model={model}, data=...)")
        fit_func = self.func_of(fit)
        explicit = spec.get("metrics") or []
        for call in later:
            meth = self.method(call)
            c = f"{self.code(call.func)}()"
            if self.func_of(call) is not fit_func:
                self.find(call, c, "manual", meth, f"{meth}() in another function than fit(): pass the trainer there")
                continue
            if meth == "predict":
                xs = self.arg(call, "x", 0)
                self.replace[call] = self.expr(f"{tname}.predict({self.code(xs)})")
                self.find(call, c, "converted", "predict", f"{tname}.predict(x): the model's outputs as a numpy array")
                continue
            ex, ey = self.arg(call, "x", 0), self.arg(call, "y", 1)
            if ex is None:
                self.find(call, c, "manual", "evaluate", "evaluate() without data")
                continue
            edata = f"({self.code(ex)}, {self.code(ey)})" if ey is not None else self.code(ex)
            base = f"{tname}.evaluate(data={edata})"
            rd = self.arg(call, "return_dict")
            if rd is not None and self.value(rd) is True:
                new = base
                hint = f"{base}: a dict with test/loss, test/<metric> keys"
                self._evaluate_keys(call)
            elif explicit:
                new = f"list({base}.values())"
                hint = f"[loss, {', '.join(explicit)}] in compile's order"
            else:
                new = f'{base}["test/loss"]'
                hint = "the loss, as Keras returns without metrics"
            self.replace[call] = self.expr(new)
            self.find(call, c, "converted", "evaluate", hint)
        return True

    def _evaluate_keys(self, call: cst.Call) -> None:
        """``scores = model.evaluate(..., return_dict=True)`` then ``scores["accuracy"]`` -> ``["test/accuracy"]``."""
        name = self.assigned_name(call)
        if name is None:
            return
        for sub in self.subscripts:
            if (not isinstance(sub.value, cst.Name) or sub.value.value != name or self.pos(sub)[0] < self.pos(call)[0]
                    or len(sub.slice) != 1 or not isinstance(sub.slice[0].slice, cst.Index)):
                continue
            key = self.value(sub.slice[0].slice.value)
            new = facade_key(key, "test") if isinstance(key, str) else None
            if new is None:
                self.find(sub, self.code(sub), "manual", "evaluate.key", f"{self.src(key)} has no facade key")
                continue
            self.replace[sub.slice[0].slice.value] = self.key_node(sub.slice[0].slice.value, new)
            self.find(sub, self.code(sub), "converted", "evaluate.key", f'{name}["{new}"]')

    def _not_faithful(self) -> list[str]:
        """What in the model the facade cannot train as Keras does, each reported manual; the reasons."""
        reasons: list[str] = []
        strings = [c for c in self.calls if self.fw_last(c.func) in STRING_LAYERS]
        if strings:
            self.find(strings[0], f"{self.code(strings[0].func)}(...)", "manual", "model.string-input",
                      "the model takes strings (text preprocessing inside it): the facade takes numeric arrays; "
                      "vectorize the texts before fit (token ids) and migrate again; this file stays on Keras")
            reasons.append("string inputs")
        per_step = [c for c in self.calls if self.fw_last(c.func) == "TimeDistributed"]
        if per_step:
            self.find(per_step[0], f"{self.code(per_step[0].func)}(...)", "manual", "model.per-step-output",
                      "one output per time step (sequence labelling): the facade's tasks take one label or one "
                      "target vector per sample; this file stays on Keras")
            reasons.append("per-step outputs")
        for c in self.calls:
            if self.fw_last(c.func) not in ("Model", "Functional"):
                continue
            for kw, index in (("inputs", 0), ("outputs", 1)):
                several = self._several(self.arg(c, kw, index), c)
                if several:
                    self.find(c, f"{self.code(c.func)}({kw}=)", "manual", "model.multi-io",
                              f"{kw} is {several}: the facade trains models with one input and one output; "
                              "this file stays on Keras")
                    reasons.append("several inputs or outputs")
                    break
        return reasons

    def _several(self, node: Optional[cst.BaseExpression], at: cst.CSTNode) -> Optional[str]:
        """``"a list of 2"`` when ``node`` (followed through names) is a list/tuple/dict display of several
        arrays or tensors (several model inputs or outputs), else None."""
        found = self.follow(node, at) if node is not None else None
        rows = (cst.List, cst.Tuple, cst.Integer, cst.Float, cst.UnaryOperation)
        if isinstance(found, (cst.List, cst.Tuple)) and any(isinstance(e.value, rows) for e in found.elements):
            return None  # rows of numbers written out: one array
        if isinstance(found, (cst.List, cst.Tuple)) and len(found.elements) > 1:
            return f"a {'list' if isinstance(found, cst.List) else 'tuple'} of {len(found.elements)}"
        if isinstance(found, cst.Dict) and len(found.elements) > 1:
            return f"a dict of {len(found.elements)}"
        return None

    def _checkpoint_reads(self, node: cst.Call) -> None:
        """A ``ModelCheckpoint(filepath)`` whose file is read later (``load_model(filepath)``, ...): the facade
        writes <run_dir>/checkpoints instead, so every such read is manual."""
        fp = self.arg(node, "filepath", 0)
        if fp is None:
            return
        text = self.code(fp)
        value = self.value(fp)
        line = self.pos(node)[0]
        for call in self.calls:
            if call is node or self.pos(call)[0] <= line:
                continue
            for a in call.args:
                same = self.code(a.value) == text or (isinstance(value, str) and self.value(a.value) == value)
                if same:
                    self.find(call, f"{self.code(call.func)}({text})", "manual", "callbacks.modelcheckpoint.reload",
                              f"reads {text}, which the facade no longer writes: load from "
                              "trainer.result.run_dir / 'checkpoints' (best.ckpt / last.ckpt, portable *.npz) or "
                              "save the model yourself after fit")
                    break

    def _batch_size_of(self, node: cst.BaseExpression) -> Optional[int]:
        cur: Any = node
        while isinstance(cur, cst.Call) and isinstance(cur.func, cst.Attribute):
            if cur.func.attr.value == "batch" and cur.args:
                v = self.value(cur.args[0].value)
                return v if isinstance(v, int) else None
            cur = cur.func.value
        return None

    def _history_reads(self, fit: cst.Call) -> list[str]:
        history = self.assigned_name(fit)
        keys: list[str] = []
        if history is None:
            return keys
        for sub in self.subscripts:
            v = sub.value
            if not (isinstance(v, cst.Attribute) and v.attr.value == "history" and isinstance(v.value, cst.Name)
                    and v.value.value == history and len(sub.slice) == 1 and isinstance(sub.slice[0].slice, cst.Index)):
                continue
            key = self.value(sub.slice[0].slice.value)
            new = facade_key(key, "train") if isinstance(key, str) else None
            construct = f"{history}.history[{self.src(key)}]"
            if new is None:
                self.find(sub, construct, "manual", "history.key",
                          f"{self.src(key)} has no facade key (the facade logs train/loss and val/* only)")
                stmt = self.stmt_of(sub)
                if stmt is not None:
                    self.mark_todo(stmt, f"{construct} has no facade key (FitResult.history has train/loss_epoch, val/*)")
                continue
            keys.append(new)
            self.replace[sub.slice[0].slice.value] = self.key_node(sub.slice[0].slice.value, new)
            self.find(sub, construct, "converted", "history.key", f'{history}.history["{new}"] (FitResult.history, per epoch)')
        return keys

    def _callbacks(self, value: cst.BaseExpression) -> tuple[list[dict[str, Any]], Optional[dict[str, Any]]]:
        out: list[dict[str, Any]] = []
        scheduler = None
        listed = self.follow(value, value)
        list_stmt = None
        if isinstance(value, cst.Name) and isinstance(listed, (cst.List, cst.Tuple)):
            if isinstance(self.parent(listed), cst.Assign) and len(self.assigns.get(value.value, [])) == 1:
                list_stmt = self.stmt_of(listed)
            value = listed
        custom: list[str] = []
        if not isinstance(value, (cst.List, cst.Tuple)):
            self.find(value, "fit(callbacks=)", "manual", "callbacks.dynamic", "not a literal list: map them by hand")
            return out, None
        for el in value.elements:
            node = self.follow(el.value, el.value)
            kind = self.fw_last(node.func) if isinstance(node, cst.Call) else None
            c = f"{self.code(node.func)}()" if isinstance(node, cst.Call) else self.code(el.value)
            if kind in ("EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"):
                mon = self.arg(node, "monitor", 1 if kind == "ModelCheckpoint" else 0)
                monitor = self.value(mon) if mon is not None else "val_loss"
                key = facade_key(monitor, "train") if isinstance(monitor, str) else None
                if key is None:
                    self.find(node, c, "manual", f"callbacks.{kind.lower()}", f"monitor {self.src(monitor)} has no facade key")
                    continue
                mode_node = self.arg(node, "mode")
                mode = self.value(mode_node) if mode_node is not None else "auto"
                mode = mode_for(key) if mode == "auto" else mode
                if kind == "EarlyStopping":
                    cfg: dict[str, Any] = {"monitor": key, "mode": mode, "patience": 0}
                    for k in ("patience", "min_delta", "restore_best_weights"):
                        n = self.arg(node, k)
                        if n is not None:
                            cfg[k] = self.value(n)
                    out.append({"early_stopping": cfg})
                    self.find(node, c, "converted", "callbacks.earlystopping", f"spec callback early_stopping on {key}")
                elif kind == "ModelCheckpoint":
                    best = self.arg(node, "save_best_only")
                    cfg = {"monitor": key, "mode": mode, "save_top_k": 1}
                    if best is None or self.value(best) is not True:
                        cfg["save_last"] = True
                    out.append({"model_checkpoint": cfg})
                    self._checkpoint_reads(node)
                    self.find(node, c, "converted", "callbacks.modelcheckpoint",
                              "spec callback model_checkpoint; files go to <run_dir>/checkpoints (filepath not used)")
                else:
                    cfg = {"name": "reduce_on_plateau", "monitor": key, "mode": mode, "factor": 0.1, "patience": 10}
                    for k in ("factor", "patience", "min_lr", "cooldown"):
                        n = self.arg(node, k)
                        if n is not None:
                            cfg[k] = self.value(n)
                    hint = "spec scheduler reduce_on_plateau (factor, patience, min_lr, cooldown)"
                    for kw, v, _ in self.keywords(node):
                        if kw == "min_delta":
                            self.find(v, f"{c[:-2]}(min_delta=)", "unsupported", "callbacks.reducelronplateau",
                                      "min_delta (absolute in Keras) is not carried over: the spec's threshold is "
                                      "relative (torch's default)")
                        elif kw not in ("monitor", "mode", "factor", "patience", "min_lr", "cooldown", "verbose"):
                            self.find(v, f"{c[:-2]}({kw}=)", "unsupported", "callbacks.reducelronplateau",
                                      "not carried over")
                    scheduler = cfg
                    self.find(node, c, "converted", "callbacks.reducelronplateau", hint)
            elif kind == "CSVLogger":
                self.find(node, c, "converted", "callbacks.csvlogger", "the run directory's metrics.csv")
            elif kind == "TensorBoard":
                self.loggers.append("tensorboard")
                self.find(node, c, "converted", "callbacks.tensorboard",
                          "spec logging.loggers: tensorboard (event files in <run_dir>/tensorboard)")
            elif kind in ("ProgbarLogger", "History", "TerminateOnNaN"):
                if kind == "TerminateOnNaN":
                    out.append({"terminate_on_nan": {}})
                self.find(node, c, "converted", f"callbacks.{kind.lower()}", "the facade's own equivalent")
            else:
                self.find(el.value, c, "manual", "callbacks.custom",
                          "a Keras callback without facade equivalent: port it to a unified.callbacks.Callback "
                          "(UnifiedTrainer(..., callbacks=[...]))")
                custom.append(c)
                continue
            named = el.value.value if isinstance(el.value, cst.Name) else None
            if named and isinstance(node, cst.Call) and isinstance(self.parent(node), cst.Assign):
                uses = sum(1 for a in self.attributes if isinstance(a.value, cst.Name) and a.value.value == named)
                stmt = self.stmt_of(node)
                if uses == 0 and stmt is not None:
                    self.remove(stmt)
        if custom:
            stmt = list_stmt or self.stmt_of(value)
            if stmt is not None:
                self.mark_todo(stmt, f"callbacks {', '.join(custom)} are not run by the facade: port them to "
                                     "unified.callbacks.Callback and pass UnifiedTrainer(..., callbacks=[...])")
        elif list_stmt is not None:
            self.remove(list_stmt)
        return out, scheduler


