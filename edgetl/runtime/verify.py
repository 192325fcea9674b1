"""The parity pack of a bundle, run through the runtime: golden inputs against the build host's reference logits.

Every precision runs on what the bundle uses here: TensorRT bundles their engine where ``edgetl compile`` built
one, else their ONNX model in ONNX Runtime on the CPU; other bundles their own backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgetl.files import write_json_atomic
from edgetl.runtime.bundle import Bundle, BundleError


def _device_for(bundle: Bundle, precision: str) -> str | None:
    """TensorRT bundles: the engine when built here, else ONNX Runtime; others: their own device."""
    if bundle.backend == "tensorrt" and not bundle.has_engine(precision):
        return "cpu"
    return None


def runtime_plan(bundle: Bundle) -> dict[str, tuple[str, str | None]]:
    """precision -> (runtime name, device argument) the parity pack and the bundle bench use here."""
    return {
        p: (bundle.runtime_name(p, device=_device_for(bundle, p)), _device_for(bundle, p)) for p in bundle.precisions
    }


def verify_bundle(folder: Path | str, *, write: bool = True) -> dict[str, Any]:
    """Check the manifest, then run the parity pack through every precision; raise BundleError on failure.

    With ``write`` the result is stored in the bundle as verify.json.
    """
    bundle = Bundle.open(folder)
    parity = bundle.manifest["parity"]
    rows = []
    for precision, (runtime, device) in runtime_plan(bundle).items():
        inputs = bundle.parity_inputs(precision)
        reference = np.load(bundle.file(parity["references"][precision]), allow_pickle=False)
        with bundle.runner(precision, device=device) as runner:
            logits = np.concatenate([runner.infer(inputs[i : i + 1]) for i in range(len(inputs))])
        diff = float(np.abs(logits - reference).max())
        flips = [parity["names"][i] for i in np.flatnonzero(logits.argmax(1) != reference.argmax(1))]
        tolerance = parity["tolerance"][precision]
        rows.append(
            {
                "precision": precision,
                "runtime": runtime,
                "images": len(inputs),
                "max_abs_logit_diff": diff,
                "tolerance": tolerance,
                "top1_disagreements": flips,
                "passed": diff <= tolerance and not flips,
            }
        )
    result = {"bundle": str(bundle.folder), "checked": rows, "passed": all(r["passed"] for r in rows)}
    if write:
        write_json_atomic(bundle.folder / "verify.json", result)
    failed = [r for r in rows if not r["passed"]]
    if failed:
        lines = [
            f"{r['precision']} on {r['runtime']}: max |logit diff| {r['max_abs_logit_diff']:.3g} "
            f"(tolerance {r['tolerance']}), top-1 disagreements: {', '.join(r['top1_disagreements']) or 'none'}"
            for r in failed
        ]
        advice = (
            "rebuild the engines with 'edgetl compile' and check the TensorRT version against the profile"
            if bundle.backend == "tensorrt"
            else f"check the {bundle.backend} version on this machine against the bundle's card.json"
        )
        raise BundleError(
            f"parity pack of {bundle.folder} FAILED:\n  " + "\n  ".join(lines) + f"\nDo not deploy; {advice}."
        )
    return result
