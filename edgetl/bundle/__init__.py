"""Bundles: what goes onto the line PC or device, for every target profile.

Written on the build host by ``edgetl build`` / ``edgetl bundle`` (:mod:`edgetl.bundle.build`, laid out by
:mod:`edgetl.bundle.write`); checked and run by the line runtime (:mod:`edgetl.runtime`: ``edgetl verify``,
``edgetl predict``); on NVIDIA devices ``edgetl compile BUNDLE`` builds the engines (:mod:`edgetl.bundle.device`).
Nothing in a bundle is loaded before every file matches the manifest.
"""

from edgetl.bundle.build import host_runner, stage_bundle, tensorrt_thresholds
from edgetl.bundle.device import bench_bundle, bundle_profile, compile_bundle
from edgetl.bundle.summary import bundle_summaries, device_summary
from edgetl.bundle.write import MIN_MARGIN, PARITY_INPUTS, TOLERANCE, select_golden, write_bundle
from edgetl.runtime.bundle import KIND, MANIFEST, SCHEMA_VERSION, BundleError, is_bundle, read_manifest
from edgetl.runtime.verify import verify_bundle

__all__ = [
    "KIND",
    "MANIFEST",
    "MIN_MARGIN",
    "PARITY_INPUTS",
    "SCHEMA_VERSION",
    "TOLERANCE",
    "BundleError",
    "bench_bundle",
    "bundle_profile",
    "bundle_summaries",
    "compile_bundle",
    "device_summary",
    "host_runner",
    "is_bundle",
    "read_manifest",
    "select_golden",
    "stage_bundle",
    "tensorrt_thresholds",
    "verify_bundle",
    "write_bundle",
]
