"""Chain of custody: a stage reads its inputs only while they still match the sha256 they were recorded with.

Each record names its inputs' hashes when it is written: ``data/split.csv`` the sha256 of every image,
``train/meta.json`` the checkpoint's, ``export/parity.json`` the ONNX model's and the checkpoint's it was exported
from, ``artifact.json`` every compiled file's and the ONNX model's it was compiled from. A stage checks the ones it
reads before it reads them and refuses a mismatch (:class:`IntegrityError`) naming the file and the command that
makes it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetl.data.dataset import Dataset, load_split
from edgetl.errors import EdgetlError, IntegrityError, InvalidFileError, MissingInputError
from edgetl.files import read_json, sha256_file
from edgetl.run import RunDir

# What each stage reads: the splits whose images it decodes and whether it uses the checkpoint and the ONNX model.
_READS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "train": (("train", "val"), False, False),
    "export": (("val",), True, False),
    "calibrate": (("train",), False, False),
    "compile": (("train", "val"), False, True),
    "bench": (("val", "test"), True, True),
    "bundle": (("val", "test"), True, True),
    "gap": (("train",), True, False),
    "adapt": (("train", "val", "test"), True, False),
    "drift reference": (("train", "val"), True, False),
    "study": (("train", "val", "test"), True, False),
}
_LISTED = 10


def _record(path: Path, command: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingInputError(f"{path} is missing; run '{command}' first.")
    record = read_json(path)
    if not isinstance(record, dict):
        raise InvalidFileError(f"{path} is not an edgetl record (a JSON object); run '{command}' again.")
    return record


def check_checkpoint(run: RunDir) -> None:
    """train/model.pt must match the sha256 in train/meta.json (runs trained before edgetl recorded it pass)."""
    retrain = f"edgetl train {run.root}"
    meta = _record(run.train / "meta.json", retrain)
    checkpoint = run.train / "model.pt"
    if not checkpoint.is_file():
        raise MissingInputError(f"checkpoint {checkpoint} is missing; run '{retrain}' first.")
    recorded = meta.get("checkpoint_sha256")
    if recorded is not None and sha256_file(checkpoint) != recorded:
        raise IntegrityError(
            f"{checkpoint} differs from the sha256 recorded in {run.train / 'meta.json'} when it was trained: it was "
            "edited, damaged or replaced since",
            hint=f"train again with '{retrain}' (or restore the file)",
        )


def check_onnx(run: RunDir) -> None:
    """export/model.onnx must match parity.json's sha256, and come from the checkpoint train/ holds now."""
    export = f"edgetl export {run.root}"
    onnx = run.export / "model.onnx"
    if not onnx.is_file():
        raise MissingInputError(f"{onnx} is missing; run '{export}' first.")
    parity = _record(run.export / "parity.json", export)
    if parity.get("onnx_sha256") != sha256_file(onnx):
        raise IntegrityError(
            f"{onnx} differs from the sha256 recorded in {run.export / 'parity.json'} when its parity with PyTorch "
            "was checked: it was edited, damaged or replaced since",
            hint=f"export it again with '{export}'",
        )
    exported_from = parity.get("checkpoint_sha256")
    trained = _record(run.train / "meta.json", f"edgetl train {run.root}").get("checkpoint_sha256")
    if exported_from is not None and trained is not None and exported_from != trained:
        raise IntegrityError(
            f"{onnx} was exported from another checkpoint than {run.train / 'model.pt'} (trained again since?)",
            hint=f"export again with '{export}', then compile",
        )


def check_images(dataset: Dataset, run: RunDir, splits: tuple[str, ...]) -> None:
    """Every image of ``splits`` must match the sha256 data/split.csv holds for it."""
    changed = []
    for sample in (s for s in dataset.samples if s.split in splits):
        try:
            same = sha256_file(sample.path) == sample.sha256
        except OSError as exc:
            changed.append(f"{sample.path}: cannot be read ({exc.strerror or exc})")
            continue
        if not same:
            changed.append(f"{sample.path}: differs from its sha256 in split.csv (edited or replaced)")
    if changed:
        listing = "\n  ".join(changed[:_LISTED]) + (
            f"\n  ... and {len(changed) - _LISTED} more" if changed[_LISTED:] else ""
        )
        raise IntegrityError(
            f"{len(changed)} images changed since {run.data / 'split.csv'} recorded them:\n  {listing}\n"
            "A model checked on other pixels than it was split on reports a number that does not hold",
            hint=f"restore the original files, or split again with 'edgetl data split {run.root}' and rebuild the "
            "later stages (train, export, calibrate, compile, bench)",
        )


def read_meta(run: RunDir) -> dict[str, Any]:
    """train/meta.json, with the fields later stages read (classes, preprocessing spec, arch) checked."""
    from pydantic import ValidationError

    from edgetl.preprocess import PreprocessSpec

    retrain = f"edgetl train {run.root}"
    path = run.train / "meta.json"
    meta = _record(path, retrain)
    classes = meta.get("classes")
    problem = None
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        problem = "'classes' is not a list of at least two names"
    elif not isinstance(meta.get("arch"), str):
        problem = "'arch' is missing"
    else:
        try:
            PreprocessSpec.model_validate(meta.get("preprocess"))
        except ValidationError as exc:
            problem = f"'preprocess' is not a preprocessing spec ({exc.errors()[0]['msg']})"
    if problem is not None:
        raise InvalidFileError(f"{path} is not a training record: {problem}", hint=f"train again with '{retrain}'")
    return meta


def _load_split(run: RunDir) -> Dataset:
    """load_split with a damaged split.csv or dataset.json turned into an error naming them."""
    import csv

    from edgetl.data.dataset import SPLITS

    split = f"edgetl data split {run.root}"
    _record(run.data / "dataset.json", split)
    try:
        dataset = load_split(run.data)
    except EdgetlError:
        raise
    except (KeyError, TypeError, ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise InvalidFileError(
            f"{run.data / 'split.csv'} or {run.data / 'dataset.json'} is damaged ({type(exc).__name__}: {exc})",
            hint=f"split again with '{split}'",
        ) from exc
    wrong = next(
        (s for s in dataset.samples if s.label not in dataset.classes or s.split not in SPLITS or len(s.sha256) != 64),
        None,
    )
    if wrong is not None or not dataset.samples:
        what = f"the row of {wrong.path} does not fit dataset.json" if wrong is not None else "it lists no images"
        raise InvalidFileError(f"{run.data / 'split.csv'} is damaged: {what}", hint=f"split again with '{split}'")
    return dataset


def check_inputs(run: RunDir, stage: str) -> None:
    """The checks of a stage that reads no images (compile), or the model-side checks of one that does."""
    _, checkpoint, onnx = _READS[stage]
    if checkpoint:
        check_checkpoint(run)
    if onnx:
        check_onnx(run)


def verified_split(run: RunDir, stage: str) -> Dataset:
    """data/split.csv of the run, after the checks of ``stage`` (images of the splits it reads, model files)."""
    check_inputs(run, stage)
    dataset = _load_split(run)
    check_images(dataset, run, _READS[stage][0])
    return dataset


def check_artifacts(run: RunDir, artifacts: list[Any]) -> None:
    """Compiled artifacts must come from the ONNX model export/ holds now (parity.json's sha256)."""
    exported = _record(run.export / "parity.json", f"edgetl export {run.root}").get("onnx_sha256")
    for artifact in artifacts:
        if artifact.source_onnx_sha256 != exported:
            raise IntegrityError(
                f"{artifact.folder} was compiled from another model.onnx than {run.export / 'model.onnx'} "
                "(exported again since?)",
                hint=f"compile it again with 'edgetl compile {run.root} --target {artifact.profile}'",
            )
