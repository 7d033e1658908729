"""Crash-safe training checkpoints: step-named files, committed by a manifest written last.

A checkpoint is several files (weights, optimiser state, one RNG file per rank); a kill between
two of them must never leave a mismatched set. So each save writes new files named after its
step, every rank waits at a barrier, and only then does rank 0 atomically replace ``last.json``,
the one file that says which set is current. Until that rename the previous set is still the
current one and stays on disk; only sets older than the committed one are deleted.

Layout of ``<out_dir>/checkpoints``::

    step-<N>.safetensors, step-<N>.state.pt, step-<N>.rng<rank>.pt   one set per step N
    last.json          {"format", "step", "weights", "state", "world_size"}: the commit point
    last.safetensors   hard link to (or copy of) the committed weights, for people and tools

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from verydeep.io.resume import CheckpointSet
    >>> ck = CheckpointSet(Path(tempfile.mkdtemp()), rank=0, is_main=True)
    >>> ck.write(3, lambda p: p.write_bytes(b"w"), {"step": {"global_step": 3}}, {"torch": 0})
    >>> ck.exists(), ck.read()[1]["step"], sorted(p.name for p in ck.folder.iterdir())
    (True, {'global_step': 3}, ['last.json', 'last.safetensors', 'step-000000003.rng0.pt', \
'step-000000003.safetensors', 'step-000000003.state.pt'])
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from .checkpoint import load_state, save_state
from .files import atomic_write, replacing

MANIFEST = "last.json"
FORMAT = 1
_STEP_FILE = re.compile(r"^\.?step-(\d+)\.")


def _stem(step: int) -> str:
    return f"step-{step:09d}"


class CheckpointSet:
    """The resumable checkpoint of one run directory, seen from one rank."""

    def __init__(self, folder: Path, rank: int = 0, is_main: bool = True, world_size: int = 1) -> None:
        self.folder, self.rank, self.is_main, self.world_size = Path(folder), rank, is_main, world_size

    def exists(self) -> bool:
        return (self.folder / MANIFEST).is_file()

    def write(
        self,
        step: int,
        write_weights: Callable[[Path], None],
        state: dict,
        rng: dict,
        barrier: Callable[[], None] = lambda: None,
    ) -> None:
        """Write the set of ``step`` (every rank calls this), then commit it (rank 0)."""
        stem = _stem(step)
        save_state(self.folder / f"{stem}.rng{self.rank}.pt", rng)
        if self.is_main:
            write_weights(self.folder / f"{stem}.safetensors")
            save_state(self.folder / f"{stem}.state.pt", state)
        barrier()  # every rank's RNG file is complete before the set becomes current
        if not self.is_main:
            return
        manifest = {
            "format": FORMAT,
            "step": step,
            "weights": f"{stem}.safetensors",
            "state": f"{stem}.state.pt",
            "world_size": self.world_size,
        }
        atomic_write(self.folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        self._publish(self.folder / manifest["weights"])
        self._prune(step)

    def read(self) -> tuple[Path, dict, dict | None]:
        """(weights file, training state, this rank's RNG state or None) of the committed set."""
        path = self.folder / MANIFEST
        if not path.is_file():
            raise ValueError(f"{self.folder} holds no committed checkpoint ({MANIFEST})")
        try:
            m = json.loads(path.read_text())
            step, weights, state_name = int(m["step"]), m["weights"], m["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is damaged ({e}); remove it to start over") from None
        for name in (weights, state_name):
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                # a manifest names files of this folder only: never a path elsewhere to copy in
                raise ValueError(
                    f"{path} names {name!r}, not a file of {self.folder}; the checkpoint was tampered with"
                )
            if not (self.folder / name).is_file():
                raise ValueError(f"{path} names {name}, which is missing; the checkpoint was tampered with")
        state = _load(self.folder / state_name)
        if state.get("step", {}).get("global_step") != step:
            raise ValueError(f"{self.folder / state_name} does not hold step {step} as {path} says")
        if self.is_main:  # a kill between the commit and its follow-ups: finish them now
            self._publish(self.folder / weights)
            self._prune(step)
        rng = self.folder / f"{_stem(step)}.rng{self.rank}.pt"
        return self.folder / weights, state, _load(rng) if rng.is_file() else None

    def _publish(self, weights: Path) -> None:
        """Point ``last.safetensors`` at the committed weights (hard link; copy where unsupported)."""
        with replacing(self.folder / "last.safetensors") as tmp:
            tmp.unlink(missing_ok=True)  # a killed publish's leftover
            try:
                os.link(weights, tmp)
            except OSError:
                shutil.copyfile(weights, tmp)

    def _prune(self, committed: int) -> None:
        """Delete sets (and temporary files of killed writes) older than the committed one.

        Newer ones may be a rank's next save in progress (every rank has passed the barrier of
        this one), or the leftovers of a killed save that the resumed run will overwrite: they stay.
        """
        for p in self.folder.iterdir():
            m = _STEP_FILE.match(p.name)
            old = m and (int(m.group(1)) < committed or (p.name[0] == "." and int(m.group(1)) == committed))
            if old or p.name.startswith((".last.", ".best.")):  # rank 0 alone writes those, in turn
                p.unlink(missing_ok=True)


def _load(path: Path) -> dict:
    try:
        return load_state(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch.load raises many types on a damaged zip/pickle
        raise ValueError(f"{path} is not a readable training state ({type(e).__name__})") from None


# Keys that may change when a run is resumed: where and how fast it runs, how long, how often it
# saves, how it reacts to faults. Everything else changes what is learnt and must match.
RESUMABLE_CHANGES = {
    "train": {
        "epochs", "max_steps", "checkpoint_every", "device", "compile", "precision", "eval_test",
        "resume", "out_dir", "on_nonfinite", "channels_last", "save_init", "save_epochs", "deterministic",
    },
    "data": {"workers", "on_bad_image", "root"},
    "optim": {"micro_batch"},
    "model": {"num_classes", "in_channels"},  # filled in from the data; the class check covers them
    "dist": {"bucket_mb", "gradient_as_bucket_view"},  # how gradients travel, not what they are
}  # fmt: skip


def config_conflicts(old: dict, new: dict) -> list[str]:
    """``section.key (old -> new)`` for every setting that a resumed run may not change.

    A setting the old config lacks was added to verydeep after that run started; it counts as its
    default (new settings default to the old behaviour), so such runs still resume.
    """
    from ..config import RunConfig

    defaults = RunConfig().to_dict()
    out = []
    for section in sorted(set(old) | set(new)):
        a = {**defaults.get(section, {}), **old.get(section, {})}
        b = new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if key not in RESUMABLE_CHANGES.get(section, set()) and a.get(key) != b.get(key):
                out.append(f"{section}.{key} ({a.get(key)!r} -> {b.get(key)!r})")
    return out
