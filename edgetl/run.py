"""The run folder: its layout (``RunDir``), creating it (``init_run``) and opening it again (``open_run``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgetl.config import BuildConfig, ConfigError, dump_config, load_build_config
from edgetl.files import remove_stale_temps, write_text_atomic
from edgetl.lock import writes_run
from edgetl.paths import check_name, inside
from edgetl.targets.profiles import resolve_profile


@dataclass(frozen=True)
class RunDir:
    """Paths inside runs/<name>/."""

    root: Path

    @property
    def config(self) -> Path:
        return inside(self.root, "config.yaml")

    @property
    def data(self) -> Path:
        return inside(self.root, "data")

    @property
    def train(self) -> Path:
        return inside(self.root, "train")

    @property
    def export(self) -> Path:
        return inside(self.root, "export")

    @property
    def calibration(self) -> Path:
        return inside(self.root, "calibration")

    def target(self, profile: str, precision: str) -> Path:
        """targets/<profile>/<precision>/, both names checked (a profile named '../x' is refused)."""
        return inside(
            self.root, "targets", check_name(profile, what="profile name"), check_name(precision, what="precision")
        )

    def bundle(self, profile: str) -> Path:
        """bundle/<profile>/."""
        return inside(self.root, "bundle", check_name(profile, what="profile name"))


@writes_run("init")
def init_run(config: BuildConfig, *, force: bool = False, write_config: bool = True) -> RunDir:
    """Create the run folder and write the resolved config.

    ``write_config=False`` leaves config.yaml to :func:`write_run_config`, once the first stage has passed
    (``edgetl build --force`` keeps the run's record until the new data check succeeds).
    """
    run = RunDir(config.run_dir)
    if run.config.exists() and not force:
        raise ConfigError(
            f"{run.root} already holds a run; pass --force to rebuild it in place, or --name to start another."
        )
    for name in config.targets:
        resolve_profile(name)
    run.root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(run.root)
    if write_config:
        write_run_config(run, config)
    return run


def write_run_config(run: RunDir, config: BuildConfig) -> None:
    """Write (or replace) the run's config.yaml."""
    write_text_atomic(run.config, dump_config(config))


def open_run(run_dir: Path) -> tuple[RunDir, BuildConfig]:
    """Open an existing run folder and its config."""
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        raise ConfigError(f"{run.config} is missing; create the run with 'edgetl build' or 'edgetl init'.")
    remove_stale_temps(run.root)
    return run, load_build_config(run.config)
