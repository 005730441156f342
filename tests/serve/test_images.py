"""`unified serve` of a model trained on images: uploaded files (multipart field `file`, or a raw image/* body)
are decoded by the training decoder and answered like JSON /predict; bad uploads get a one-line 4xx.

The served model is a small CNN trained (torch backend) on 1x8x8 digit images in [0, 1]; its run's
preprocess.json gets the `image` entry an `imagefolder:` run records. Once the `imagefolder:` source exists,
an end-to-end test trains on a folder of PNGs and uploads one of them.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
PIL_Image = pytest.importorskip("PIL.Image")
pytest.importorskip("python_multipart")
pytest.importorskip("torch")

from unified.cli import main  # noqa: E402
from unified.data.images import load_image  # noqa: E402

MAX_FILES, MAX_BODY = 4, 64 * 1024
SIZE, CHANNELS = (8, 8), 1


def png(pixels: np.ndarray, size: tuple[int, int] | None = None, mode: str = "L", fmt: str = "PNG") -> bytes:
    """An image file of ``pixels`` (H, W floats in [0, 1]), optionally resized (W, H) and converted."""
    img = PIL_Image.fromarray((np.asarray(pixels) * 255).round().astype(np.uint8), "L")
    if size is not None:
        img = img.resize(size, PIL_Image.NEAREST)
    buf = io.BytesIO()
    img.convert(mode).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> dict:
    """A CNN on digits as 1x8x8 images in [0, 1] (torch, 2 epochs), exported to ONNX, with an image entry."""
    from sklearn.datasets import load_digits

    from unified import UnifiedTrainer

    tmp = tmp_path_factory.mktemp("serve-images")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    np.savez(tmp / "digits.npz", x=images[:, None], y=digits.target)
    spec = {"name": "digits-img", "seed": 0,
            "data": {"source": f"npz:{tmp / 'digits.npz'}", "standardize": True, "val_fraction": 0.2,
                     "batch_size": 64},
            "model": {"arch": "cnn", "channels": [8], "kernel_size": 3, "pool": 2, "hidden": [32]},
            "optimizer": {"name": "adam", "lr": 0.01}, "trainer": {"max_epochs": 2, "progress_bar": False},
            "logging": {"dir": str(tmp / "runs")}, "export": {"formats": ["onnx"]}}
    trainer = UnifiedTrainer(spec, backend="torch")
    run_dir = trainer.fit().run_dir
    pre_file = run_dir / "preprocess.json"
    pre = json.loads(pre_file.read_text())
    pre["image"] = pre.get("image") or {"size": list(SIZE), "channels": CHANNELS}  # as an imagefolder: run records
    pre_file.write_text(json.dumps(pre))
    return {"trainer": trainer, "run_dir": run_dir, "export": run_dir / "export", "images": images[:20],
            "labels": digits.target[:20].tolist(), "tmp": tmp}


@pytest.fixture(scope="module")
def image_server(image_model, start_server) -> dict:
    server = start_server([image_model["export"], "--max-rows", MAX_FILES, "--max-body-bytes", MAX_BODY,
                           "--max-batch-size", 8, "--batch-timeout-ms", 50])
    return {**image_model, "url": server.url, "server": server}


def training_pipeline(trainer, files: list[bytes]) -> tuple[np.ndarray, list]:
    """Outputs and labels for image files through the training decoder and the trained model."""
    x = np.stack([load_image(f, size=SIZE, channels=CHANNELS) for f in files])
    return trainer.predict(x), trainer.predict_labels(x)


def test_uploads_answer_like_the_training_pipeline(image_server):
    imgs = image_server["images"]
    files = [png(imgs[0]), png(imgs[1], size=(32, 32), mode="RGB"), png(imgs[2], size=(12, 20), fmt="JPEG")]
    r = httpx.post(image_server["url"] + "/predict",
                   files=[("file", (f"img{i}", f, "image/png")) for i, f in enumerate(files)])
    assert r.status_code == 200, r.text
    body = r.json()
    want, labels = training_pipeline(image_server["trainer"], files)
    outputs = np.array(body["outputs"], dtype=np.float32)
    assert outputs.shape == (3, 10)
    assert np.abs(outputs - want).max() < 1e-4
    assert body["predictions"] == labels
    # the same as a JSON client sending the decoded pixels (raw features: the graph standardizes)
    x = np.stack([load_image(f, size=SIZE, channels=CHANNELS) for f in files])
    j = httpx.post(image_server["url"] + "/predict", json={"inputs": x.tolist()}).json()
    assert np.abs(np.array(j["outputs"], np.float32) - outputs).max() <= 1e-6 and j["predictions"] == labels


def test_a_trained_digit_uploaded_is_classified(image_server):
    imgs, labels = image_server["images"], image_server["labels"]
    files = [("file", (f"{i}.png", png(imgs[i]), "image/png")) for i in range(MAX_FILES)]
    r = httpx.post(image_server["url"] + "/predict", files=files)
    assert r.status_code == 200, r.text
    assert sum(p == t for p, t in zip(r.json()["predictions"], labels)) >= MAX_FILES - 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_form_upload(image_server, tmp_path):
    imgs = image_server["images"]
    paths = []
    for i in (3, 4):
        (tmp_path / f"x{i}.png").write_bytes(png(imgs[i]))
        paths.append(tmp_path / f"x{i}.png")
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "-F", f"file=@{paths[0]}", "-F", f"file=@{paths[1]}",
                          image_server["url"] + "/predict"], capture_output=True, timeout=60, check=True)
    body = json.loads(out.stdout)
    want, labels = training_pipeline(image_server["trainer"], [p.read_bytes() for p in paths])
    assert np.abs(np.array(body["outputs"], np.float32) - want).max() < 1e-4 and body["predictions"] == labels


def test_raw_image_body(image_server):
    f = png(image_server["images"][5])
    r = httpx.post(image_server["url"] + "/predict", content=f, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    want, labels = training_pipeline(image_server["trainer"], [f])
    assert np.abs(np.array(r.json()["outputs"], np.float32) - want).max() < 1e-4
    assert r.json()["predictions"] == labels


def test_concurrent_uploads_batch_and_stay_correct(image_server):
    imgs = image_server["images"]
    files = [png(imgs[i]) for i in range(12)]
    want, labels = training_pipeline(image_server["trainer"], files)

    def one(i: int) -> tuple[int, list]:
        r = httpx.post(image_server["url"] + "/predict", files={"file": (f"{i}.png", files[i], "image/png")},
                       timeout=30)
        return r.status_code, r.json()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(12)))
    for i, (status, body) in enumerate(answers):
        assert status == 200, body
        assert np.abs(np.array(body["outputs"], np.float32)[0] - want[i]).max() < 1e-4
        assert body["predictions"] == [labels[i]]


def _multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


FORM = "multipart/form-data; boundary=b0undary"
BAD_UPLOADS = [
    ("corrupt", FORM, [("file", "broken.png", b"\x89PNG\r\n\x1a\nnot really")], 400, "file 'broken.png': not a readable image"),
    ("text", FORM, [("file", "notes.txt", b"hello, world")], 400, "file 'notes.txt': not a readable image"),
    ("empty file", FORM, [("file", "empty.png", b"")], 400, "file 'empty.png': empty file"),
    ("other field", FORM, [("image", "a.png", b"x")], 422, "unknown form field 'image'"),
    ("too many", FORM, [("file", f"{i}.png", b"x") for i in range(MAX_FILES + 1)], 413, f"at most {MAX_FILES}"),
    ("too large", FORM, [("file", "big.png", b"\0" * (MAX_BODY + 1))], 413, f"over the limit of {MAX_BODY}"),
    ("no boundary", "multipart/form-data", [("file", "a.png", b"x")], 400, "without a boundary"),
    ("mixed", "multipart/mixed; boundary=b0undary", [("file", "a.png", b"x")], 415, "upload images as multipart/form-data"),
    ("raw garbage", "image/png", None, 400, "not a readable image"),
]


@pytest.mark.parametrize("content_type,parts,status,message", [b[1:] for b in BAD_UPLOADS],
                         ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_get_one_line_4xx(image_server, content_type, parts, status, message):
    body = _multipart(parts) if parts is not None else b"GIF89a..."
    r = httpx.post(image_server["url"] + "/predict", content=body, headers={"Content-Type": content_type})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert message in detail and "\n" not in detail and "BytesIO" not in detail
    assert image_server["server"].proc.poll() is None


def test_a_decompression_bomb_is_refused_before_decoding(image_server):
    buf = io.BytesIO()
    PIL_Image.new("1", (20000, 5000)).save(buf, "PNG")  # 100 M pixels in a few kB
    assert len(buf.getvalue()) < MAX_BODY
    r = httpx.post(image_server["url"] + "/predict", files={"file": ("bomb.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "bomb.png': 20000x5000 pixels is over the limit" in r.json()["detail"]


def test_empty_form_and_form_without_file(image_server):
    url = image_server["url"] + "/predict"
    r = httpx.post(url, content=b"--b0undary--\r\n", headers={"Content-Type": FORM})
    assert r.status_code == 400 and "no part delimited by its boundary" in r.json()["detail"]
    r = httpx.post(url, content=b"", headers={"Content-Type": FORM})
    assert r.status_code == 400 and "empty body" in r.json()["detail"]


def test_json_still_served_and_metadata_says_uploads(image_server):
    x = image_server["images"][:2, None]
    r = httpx.post(image_server["url"] + "/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    upload = httpx.get(image_server["url"] + "/metadata").json()["serving"]["image_upload"]
    assert upload["size"] == list(SIZE) and upload["channels"] == CHANNELS and upload["field"] == "file"


def test_openapi_documents_the_multipart_body(image_server):
    doc = httpx.get(image_server["url"] + "/openapi.json").json()
    content = doc["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data", "image/png", "image/jpeg"}
    file_schema = content["multipart/form-data"]["schema"]["properties"]["file"]
    assert file_schema["items"] == {"type": "string", "format": "binary"} and file_schema["maxItems"] == MAX_FILES
    assert "415" in doc["paths"]["/predict"]["post"]["responses"]


def test_model_not_trained_on_images_refuses_uploads(served):
    for headers, body in (({"Content-Type": FORM}, _multipart([("file", "a.png", png(np.zeros((8, 8))))])),
                          ({"Content-Type": "image/png"}, png(np.zeros((8, 8))))):
        r = httpx.post(served["url"] + "/predict", content=body, headers=headers)
        assert r.status_code == 415, r.text
        detail = r.json()["detail"]
        assert "takes JSON" in detail and "\n" not in detail
    doc = httpx.get(served["url"] + "/openapi.json").json()
    assert set(doc["paths"]["/predict"]["post"]["requestBody"]["content"]) == {"application/json"}
    assert httpx.get(served["url"] + "/metadata").json()["serving"]["image_upload"] is None


def test_image_entry_that_does_not_fit_the_model_is_refused_at_start(image_model, tmp_path, capsys, port_finder):
    run = tmp_path / "run"
    shutil.copytree(image_model["run_dir"], run)
    pre = json.loads((run / "preprocess.json").read_text())
    pre["image"] = {"size": [16, 16], "channels": 3}
    (run / "preprocess.json").write_text(json.dumps(pre))
    assert main(["serve", str(run), "--port", str(port_finder())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preprocess.json" in err[0] and "[1, 8, 8]" in err[0], err


def test_where_the_image_entry_is_read(image_model, tmp_path):
    """The manifest's input.image, else preprocess.json of the run (beside export/ or source.run_dir)."""
    from unified.serve import load_model

    assert load_model(image_model["export"]).image.size == SIZE  # <run_dir>/export: the run's preprocess.json
    alone = tmp_path / "copied-export"
    shutil.copytree(image_model["export"], alone)
    manifest = json.loads((alone / "manifest.json").read_text())
    manifest["source"]["run_dir"] = str(tmp_path / "gone")
    (alone / "manifest.json").write_text(json.dumps(manifest))
    assert load_model(alone).image is None  # no run to read it from: JSON only
    manifest["input"]["image"] = {"size": list(SIZE), "channels": CHANNELS}
    (alone / "manifest.json").write_text(json.dumps(manifest))
    image = load_model(alone).image
    assert image is not None and image.size == SIZE and image.source.endswith("manifest.json")


def test_fuzzer_finds_no_server_error_on_uploads(image_server):
    """schemathesis on the upload body (positive and negative), from the server's own /openapi.json."""
    schemathesis = pytest.importorskip("schemathesis")
    requests = pytest.importorskip("requests")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    url = image_server["url"]
    doc = httpx.get(url + "/openapi.json").json()
    post = doc["paths"]["/predict"]["post"]
    post["requestBody"]["content"].pop("application/json")  # fuzzed with the other routes in test_fuzz.py
    doc["paths"] = {"/predict": {"post": post}}
    schema = schemathesis.openapi.from_dict(doc)
    op = next(iter(schema.get_all_operations())).ok()
    sent, errors = [], []
    session = requests.Session()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=25, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            r = case.call(base_url=url, session=session, timeout=10)
            sent.append(r.status_code)
            if r.status_code >= 500:
                errors.append(f"{r.status_code}: {r.text[:200]}")

        fuzz()
    session.close()
    assert not errors, errors[:5]
    assert len(sent) >= 30 and any(400 <= s < 500 for s in sent)
    assert image_server["server"].proc.poll() is None


# --- end to end: a folder of PNGs, trained with the imagefolder: source --------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _imagefolder_available() -> bool:
    import importlib.util

    from unified.data import sources

    return ("imagefolder" in getattr(sources, "SOURCES", {})
            and importlib.util.find_spec("unified.data.imagefolder") is not None
            and (EXAMPLES / "make_image_folder.py").is_file())


@pytest.mark.skipif(not _imagefolder_available(), reason="the imagefolder: data source is not in this tree yet")
def test_imagefolder_model_answers_an_uploaded_png(tmp_path, start_server):
    """examples/make_image_folder.py's PNGs, trained 2 epochs (torch), exported to ONNX, served: PNGs from the
    folder uploaded (httpx multipart, a batch; curl -F) answer what the trained model answers on them."""
    import importlib.util

    from unified import UnifiedTrainer
    from unified.export import Preprocess

    loader = importlib.util.spec_from_file_location("make_image_folder", EXAMPLES / "make_image_folder.py")
    maker = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(maker)
    folder = tmp_path / "digits_png"
    maker.make_image_folder(folder, per_class=30, size=16, seed=0)  # 10 classes x 30 RGB 16x16 PNGs
    size, channels = [12, 12], 3  # the training decoder resizes them
    spec = {"name": "pngs", "seed": 0,
            "data": {"source": f"imagefolder:{folder}", "image": {"size": size, "channels": channels},
                     "standardize": True, "val_fraction": 0.2, "batch_size": 32},
            "model": {"arch": "cnn", "channels": [8], "kernel_size": 3, "pool": 2, "hidden": [32]},
            "optimizer": {"name": "adam", "lr": 0.01}, "trainer": {"max_epochs": 2, "progress_bar": False},
            "logging": {"dir": str(tmp_path / "runs")}, "export": {"formats": ["onnx"]}}
    trainer = UnifiedTrainer(spec, backend="torch")
    run_dir = trainer.fit().run_dir
    assert Preprocess.load(run_dir).image == {"size": size, "channels": channels}  # what the server reads
    server = start_server([run_dir / "export"])
    assert httpx.get(server.url + "/metadata").json()["serving"]["image_upload"]["size"] == size

    uploads = [sorted((folder / str(label)).glob("*.png"))[-1] for label in range(10)]  # one PNG of each class
    x = np.stack([load_image(p, size=size, channels=channels) for p in uploads])  # the training decoder
    want, labels = trainer.predict(x), trainer.predict_labels(x)
    r = httpx.post(server.url + "/predict", files=[("file", (p.name, p.read_bytes(), "image/png")) for p in uploads],
                   timeout=30)
    assert r.status_code == 200, r.text
    assert np.abs(np.array(r.json()["outputs"], np.float32) - want).max() < 1e-4
    assert r.json()["predictions"] == labels
    assert len(set(labels)) >= 3  # a trained classifier, not a constant
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sS", "--max-time", "30", "-F", f"file=@{uploads[1]}", server.url + "/predict"],
                             capture_output=True, timeout=60, check=True)
        assert json.loads(out.stdout)["predictions"] == labels[1:2]
