"""The README of a bundle: what it is, how to install the runtime on that device, how to check and run it."""

from __future__ import annotations

from typing import Any

RUNTIME_EXTRA = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "onnxruntime"}


def _cuda_python(trt: dict[str, Any]) -> str:
    """The cuda-python release line matching the device's CUDA (JetPack 5: CUDA 11.4, JetPack 6: CUDA 12.6)."""
    jetpack = trt.get("jetpack") or ""
    if jetpack.startswith("5"):
        return "cuda-python>=11.8,<12"
    if jetpack.startswith("6"):
        return "cuda-python>=12.6,<13"
    return "cuda-python  # the release matching the container's CUDA major version (nvcc --version)"


def _install(manifest: dict[str, Any]) -> list[str]:
    backend = manifest["backend"]
    profile = manifest["profile"]
    lines = [
        "Install the line runtime (no training stack: numpy, Pillow, pydantic, PyYAML, typer, rich and the backend),",
        "from the edgetl wheel built on the build host (`pip wheel --no-deps .`) or a package index:",
        "",
        f'    pip install "edgetl[{RUNTIME_EXTRA[backend]}]"',
    ]
    if backend == "tensorrt":
        trt = profile["tensorrt"]
        where = f"JetPack {trt['jetpack']}" if trt.get("jetpack") else "NVIDIA's TensorRT container"
        lines += [
            f'    pip install onnx "{_cuda_python(trt)}"',
            "",
            f"TensorRT itself comes with {where} (TensorRT {trt['version']} assumed by this bundle); the engines are",
            "built here, on the device, because they only run on the GPU and TensorRT version that built them.",
        ]
    return lines


def _commands(manifest: dict[str, Any], folder: str) -> list[str]:
    default = next(p for p in ("int8", "fp16", "fp32") if p in manifest["models"])
    lines = ["From the folder that holds this bundle:", ""]
    if manifest["backend"] == "tensorrt":
        lines += [
            f"    edgetl compile {folder}    # verify the files, build the engines here, run the parity pack",
            f"    edgetl verify {folder}     # the parity pack again (top-1 and logit drift per precision)",
            f"    edgetl bench {folder}      # latency of every engine on this device",
        ]
    else:
        lines += [
            f"    edgetl verify {folder}     # every file against the manifest, then the parity pack here",
            f"    edgetl bench {folder}      # latency of every precision on this machine",
        ]
    lines += [
        f"    edgetl predict {folder} images/ --precision {default} --out results.csv",
        f"    edgetl predict {folder} --watch /path/camera/out --precision {default} --out results.jsonl",
        "",
        "`predict` writes one row per image (path, class, defect score, verdict ok/reject, ms) and a summary;",
        "`--threshold T` overrides the tuned reject threshold, `--fail-on-reject` exits 1 when a part is rejected.",
        *(
            [
                "`--drift` also embeds each image (drift/embedder.onnx, about one FP32 backbone pass;",
                "`--drift-every N` samples) and prints, for each window of `--drift-window` images (100), whether",
                "production has moved away from the images the model was validated on (drift/reference.npz): no",
                "measurable shift, shift or large shift.",
            ]
            if manifest.get("drift")
            else []
        ),
        "",
        "From Python:",
        "",
        "    from edgetl.runtime import load",
        "",
        f'    with load("{folder}", precision="{default}") as model:',
        '        for p in model.predict(["part.png"]):',
        "            print(p.label, p.score, p.verdict, p.ms)",
    ]
    return lines


def _thresholds(manifest: dict[str, Any], thresholds: dict[str, Any]) -> list[str]:
    if not thresholds:
        return ["No reject threshold was tuned (the validation data lacked good or defective parts)."]
    good = manifest.get("good_class")
    lines = [f"Reject rule: a part is rejected when its defect score 1 - P({good}) >= the threshold of its precision:"]
    lines += [""] + [f"    {p}: {t['threshold']:.6g}" for p, t in thresholds.items()]
    return lines


def bundle_readme(manifest: dict[str, Any], *, thresholds: dict[str, Any], figures: list[str]) -> str:
    """The README text; ``figures`` are lines on what the model was validated on, from the card."""
    profile = manifest["profile"]
    folder = profile["name"]
    files = ", ".join(f"{p}: {', '.join(m['files'])}" for p, m in manifest["models"].items())
    deploy = "triton/ (a Triton model repository for this device)"
    if manifest["deepstream"]:
        deploy += ", deepstream/ (nvinfer configs); TensorRT plans are added to triton/ by `edgetl compile`"
    parts = [
        f"# edgetl bundle: {manifest['name']} for {folder}",
        "",
        str(profile.get("description", "")),
        "",
        "## Install",
        "",
        *_install(manifest),
        "",
        "## Check and run",
        "",
        *_commands(manifest, folder),
        "",
        "## What it decides",
        "",
        *_thresholds(manifest, thresholds),
        "",
        *figures,
        "",
        "## Files",
        "",
        f"Models ({files}); labels.txt; preprocess.json (the preprocessing the model was trained and validated",
        f"with; {_input_line(manifest)}); thresholds.json; card.json (the model card: data, figures, recipe,",
        f"versions); parity/ (golden images and reference logits); {deploy}. manifest.json holds the sha256 of",
        "every file: nothing is loaded before every file matches, and a file the manifest does not list is refused.",
        "",
    ]
    return "\n".join(parts)


def _input_line(manifest: dict[str, Any]) -> str:
    pixels = [
        p
        for p, m in manifest["models"].items()
        if (m.get("preprocess") or manifest["preprocess"]).get("dtype") == "uint8"
    ]
    spec = manifest["preprocess"]
    size, channels = spec["input_size"], spec["channels"]
    floats = f"the normalised float32 tensor, (N, {channels}, {size}, {size})"
    if not pixels:
        return f"the models take {floats}"
    shown = "the models take" if len(pixels) == len(manifest["models"]) else f"the {', '.join(pixels)} models take"
    rest = "" if len(pixels) == len(manifest["models"]) else f"; the others {floats}"
    return (
        f"{shown} the resized uint8 pixels, (N, {size}, {size}, {channels}), and normalise them themselves: feed "
        f"the camera's pixels{rest}"
    )
