"""Uploaded images for a model trained on ``imagefolder:`` data: multipart parts named ``file`` (or a raw
``image/*`` body), decoded by the training decoder, one sample per file.

The decoded sample is exactly what a JSON client would send as one row of ``{"inputs": [...]}``: the
training decoder's ``[C, H, W]`` float32 in ``[0, 1]`` (:func:`unified.data.images.load_image`, the code the
``imagefolder:`` source runs); the standardization fitted on the train split is inside the exported graph,
so every upload is standardized exactly as training did. Which size and channels: the ``image`` entry the
run recorded (``{"size": [H, W], "channels": C}``), read from the manifest's ``input.image`` or from the
run's ``preprocess.json``.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from unified.errors import DataError, SpecError
from unified.files import read_json_object
from unified.export.manifest import MANIFEST
from unified.export.preprocess import PREPROCESS_FILE
from unified.serve.tensors import BadRequest

FIELD = "file"
"""The multipart field every uploaded image goes in (several parts with this name: a batch)."""

MULTIPART = "multipart/form-data"


@dataclass(frozen=True)
class ImageInput:
    """How an uploaded file becomes one sample: decoded to ``channels``, resized to ``size`` (H, W).

    Attributes:
        size: ``(H, W)`` every upload is resized to (the model's input size).
        channels: 1 (grayscale), 3 (RGB) or 4 (RGBA).
        source: the file the entry was read from (for messages and ``/metadata``).
    """

    size: tuple[int, int]
    channels: int
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "channels": self.channels, "field": FIELD, "from": self.source}


def image_input(manifest: dict[str, Any], root: Optional[Path],
                sample_shape: Sequence[Optional[int]]) -> Optional[ImageInput]:
    """The served model's image entry, or None for a model not trained on images.

    Looked up in the manifest's ``input.image``, then in ``preprocess.json`` of the run the export came
    from (the export directory itself, its parent when that is a run directory, then the manifest's
    ``source.run_dir``).

    Args:
        manifest: the export manifest.
        root: the directory holding the manifest (None for a bare ``.onnx`` file).
        sample_shape: the model's sample shape; an image model's is ``[C, H, W]``.

    Raises:
        SpecError: the entry is malformed or does not fit the model's input shape (names the file).
    """
    source = str(root / MANIFEST) if root is not None else MANIFEST
    entry, where = (manifest.get("input") or {}).get("image"), f"{source}: input.image"
    if entry is None and root is not None:
        run_dirs = [root]
        if (root.parent / "spec.yaml").is_file():  # <run_dir>/export, wherever the run directory now is
            run_dirs.append(root.parent)
        recorded = (manifest.get("source") or {}).get("run_dir")
        if recorded:
            run_dirs.append(Path(recorded))
        for run_dir in run_dirs:
            path = run_dir / PREPROCESS_FILE
            entry, source, where = _preprocess_image(path), str(path), f"{path}: image"
            if entry is not None:
                break
    if entry is None:
        return None
    return _checked(entry, where, source, sample_shape)


def _preprocess_image(path: Path) -> Any:
    """The ``image`` entry of a ``preprocess.json`` (None when the file or the entry is missing)."""
    return (read_json_object(path) or {}).get("image")


def _checked(entry: Any, where: str, source: str, sample_shape: Sequence[Optional[int]]) -> ImageInput:
    if not isinstance(entry, dict):  # a Preprocess attribute object
        entry = {"size": getattr(entry, "size", None), "channels": getattr(entry, "channels", None)}
    if len(sample_shape) != 3:
        raise SpecError(f"{where}: an image entry, but the model's input is {list(sample_shape)} (expected "
                        f"[C, H, W])")
    c, h, w = sample_shape
    channels, size = entry.get("channels", c), entry.get("size")
    ok_size = size is None or (isinstance(size, (list, tuple)) and len(size) == 2
                               and all(isinstance(d, int) and d > 0 for d in size))
    if not isinstance(channels, int) or not ok_size:
        got = json.dumps(entry, default=str)[:200]
        raise SpecError(f"{where}: expected {{\"size\": [H, W], \"channels\": C}}, got {got}")
    if size is None:
        size = (h, w)
    if (c is not None and channels != c) or any(m is not None and m != s for m, s in zip((h, w), size)):
        raise SpecError(f"{where}: size {list(size)} / channels {channels} do not fit the model input "
                        f"{list(sample_shape)} ([C, H, W])")
    if h is None or w is None:
        raise SpecError(f"{where}: the model input {list(sample_shape)} has no fixed height and width")
    return ImageInput(size=(int(size[0]), int(size[1])), channels=int(channels), source=source)


def is_upload(content_type: str) -> bool:
    """True for a body that carries files (``multipart/form-data``, any ``multipart/*``, a raw ``image/*``)."""
    ct = content_type.strip().lower()
    return ct.startswith("multipart/") or ct.startswith("image/")


def parse_upload(body: bytes, content_type: str, max_files: int) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every uploaded file, in order; :class:`BadRequest` with a one-line reason.

    A ``multipart/form-data`` body: its parts named ``file`` (another field is refused); a raw
    ``image/*`` body: one file.
    """
    ct = content_type.strip()
    if ct.lower().startswith("image/"):
        if not body:
            raise BadRequest(400, f"empty {ct.split(';')[0]} body; send the image file's bytes")
        return [("uploaded image", body)]
    files = parse_multipart(body, ct)
    if not files:
        raise BadRequest(422, f"no image in the form; send each image as field '{FIELD}' (curl -F {FIELD}=@x.png)")
    if len(files) > max_files:
        raise BadRequest(413, f"{len(files)} files; this server takes at most {max_files} per request")
    return files


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The ``file`` parts of a ``multipart/form-data`` body (python-multipart's parser; :class:`BadRequest`)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(content_type)
    if kind != MULTIPART.encode():
        raise BadRequest(415, f"Content-Type {kind.decode('latin-1')!r}: upload images as {MULTIPART} "
                              f"(field '{FIELD}') or send JSON {{\"inputs\": [...]}}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest(400, f"{MULTIPART} without a boundary parameter in Content-Type")
    if not body.strip():
        raise BadRequest(400, f"empty body; expected a {MULTIPART} form with field '{FIELD}'")
    parts: list[dict[str, Any]] = []
    header: dict[str, bytearray] = {"name": bytearray(), "value": bytearray()}

    def begin() -> None:
        parts.append({"headers": {}, "data": bytearray()})

    def header_field(data: bytes, start: int, end: int) -> None:
        header["name"] += data[start:end]

    def header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def header_end() -> None:
        parts[-1]["headers"][bytes(header["name"]).lower()] = bytes(header["value"])
        header["name"], header["value"] = bytearray(), bytearray()

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    callbacks: Any = {"on_part_begin": begin, "on_header_field": header_field, "on_header_value": header_value,
                      "on_header_end": header_end, "on_part_data": part_data}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as e:
        raise BadRequest(400, f"body is not a valid {MULTIPART} form ({_line(e)})") from None
    if not parts:
        raise BadRequest(400, f"body is not a valid {MULTIPART} form (no part delimited by its boundary)")
    files = []
    for i, part in enumerate(parts):
        disposition, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise BadRequest(400, f"form part {i} has no Content-Disposition: form-data; name=...")
        if name != FIELD.encode():
            raise BadRequest(422, f"unknown form field {name.decode('utf-8', 'replace')!r}; send each image as "
                                  f"field '{FIELD}'")
        filename = options.get(b"filename")
        label = f"file {filename.decode('utf-8', 'replace')!r}" if filename else f"form part {i}"
        files.append((label, bytes(part["data"])))
    return files


def decode_uploads(files: list[tuple[str, bytes]], image: ImageInput) -> np.ndarray:
    """``[n, C, H, W]`` float32 in ``[0, 1]``: each file through the training decoder; 400 naming a bad one."""
    from unified.data.images import load_image

    out = np.empty((len(files), image.channels, *image.size), dtype=np.float32)
    for i, (name, data) in enumerate(files):
        if not data:
            raise BadRequest(400, f"{name}: empty file; expected a PNG/JPEG image")
        check_pixels(name, data)
        try:
            out[i] = load_image(data, size=image.size, channels=image.channels, where=name)
        except DataError as e:
            raise BadRequest(400, _line(e.detail)) from None
        except Exception as e:  # noqa: BLE001 - a decoder error load_image lets through (EOFError...): a bad file
            raise BadRequest(400, f"{name}: not a readable image ({type(e).__name__}: {_line(e)})") from None
    return out


def check_pixels(name: str, data: bytes) -> None:
    """413 when the file's header declares more pixels than Pillow's ``MAX_IMAGE_PIXELS`` (a small file can
    decode to gigabytes: Pillow only warns up to twice that limit); nothing is decoded here."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if not limit:
        return
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - not an image: the decoder names what is wrong
        return
    if width * height > limit:
        raise BadRequest(413, f"{name}: {width}x{height} pixels is over the limit of {int(limit)} pixels per image")


_BUFFER_REPR = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _line(e: Any) -> str:
    """One line of an error message (without Pillow's ``<_io.BytesIO object at 0x...>``)."""
    text = _BUFFER_REPR.sub("", str(e)).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
