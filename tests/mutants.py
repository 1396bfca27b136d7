"""Mutations the test suite is known to catch, and a runner that proves it (tests/README.md lists them).

Each mutant is one textual change to the backend (the kind of bug an audit found the suite blind to) and the tests
that must fail on it. The runner copies the repository into a temporary folder (the checkout itself is never
touched: other engineers may share it), applies one mutant at a time, runs its tests there and reports
CAUGHT (the tests failed) or MISSED (they passed: the suite has a hole). Exit status 1 when any mutant is missed.

    .venv/bin/python -m tests.mutants            # every mutant (several minutes: some need the in-process app)
    .venv/bin/python -m tests.mutants ITEM_INDEX SAME_AS   # just these
    .venv/bin/python -m tests.mutants --list
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_SHARED = (".venv", ".cache", ".ls-venv")  # symlinked into the copy, not copied


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file in the repository
    old: str  # exact text replaced (must occur exactly once)
    new: str
    tests: tuple[str, ...]  # pytest node ids (or files) that must fail
    why: str


MUTANTS: tuple[Mutant, ...] = (
    Mutant("ITEM_INDEX", "backend/ls/regions.py",
           "    if not 0 <= idx < num_frames:", "    if not 0 <= idx <= num_frames:",
           ("tests/test_regions.py",),
           "item_index == num_frames accepted (one past the last frame)"),
    Mutant("REPLAY_ORDER", "backend/ls/prompts.py",
           "            regions = sorted(regions, key=lambda r: isinstance(r, BrushRegion))",
           "            regions = list(regions)",
           ("tests/test_prompts.py::test_rebuild_replays_prompts_before_corrections",),
           "rebuild no longer replays prompts before corrections"),
    Mutant("REPLAY_BOX_IOU", "backend/ls/prompts.py",
           "            if scores and scores[0][0] >= 0.5:\n                return scores[0][1]\n        return _new_or",
           "            if False:\n                return scores[0][1]\n        return _new_or",
           ("tests/test_prompts.py::test_rebuild_rejoins_rectangles_by_box_iou_not_by_order",),
           "rebuild no longer rejoins a rectangle to the object its box frames"),
    Mutant("SAME_AS_MASK", "backend/ls/prompts.py",
           "        if self.mask is not None and not np.array_equal(self.mask, other.mask):",
           "        if False:",
           ("tests/test_prompts.py::test_a_different_mask_on_the_same_frame_is_a_change",
            "tests/test_app.py::test_a_second_correction_on_the_same_frame_repropagates"),
           "FramePrompt.same_as ignores the mask's pixels (a second correction on a frame never reaches the engine)"),
    Mutant("RESEND_CANCELS", "backend/serving/tracking.py",
           "job.state in (\"queued\", \"running\", \"done\"):\n                return job, False",
           "job.state in (\"queued\", \"running\", \"done\"):\n                job.cancel()\n"
           "                return job, False",
           ("tests/test_app.py::test_resending_the_same_prompts_keeps_the_running_job",),
           "unchanged prompts cancel the running job (and hand back the cancelled one)"),
    Mutant("RESEND_RESTARTS", "backend/serving/tracking.py",
           "            if job is not None and job.version == tracker.version and job.state in",
           "            if False and job is not None and job.version == tracker.version and job.state in",
           ("tests/test_app.py::test_resending_the_same_prompts_keeps_the_running_job",),
           "unchanged prompts cancel and restart the propagation"),
    Mutant("CORRECTION_NOT_IN_MEMORY", "backend/ls/tasktrack.py",
           "out = predictor.add_mask(self.session, frame, obj, prompt.mask)",
           "out = predictor.add_mask(self.session, frame, obj, prompt.mask if self.mask(obj, frame) is None "
           "else self.mask(obj, frame))",
           ("tests/test_app.py::test_correction_repropagates_from_its_frame_only",),
           "the corrected frame shows the correction but the engine's memory gets the old mask (later frames "
           "change only by a few pixels)"),
    Mutant("JOB_WORKERS_IGNORED", "backend/serving/jobs.py",
           "ThreadPoolExecutor(max_workers=workers,", "ThreadPoolExecutor(max_workers=1,",
           ("tests/test_jobs.py::test_workers_bound_how_many_jobs_run_at_once",),
           "JOB_WORKERS ignored (one job at a time)"),
    Mutant("QUEUED_CANCEL_WAITS", "backend/serving/jobs.py",
           "            if job.state != \"queued\":\n                return job",
           "            if True:\n                return job",
           ("tests/test_jobs.py::test_a_cancelled_queued_job_ends_at_once_and_never_starts",
            "tests/test_jobs.py::test_a_cancelled_queued_job_does_not_keep_its_tracker_alive"),
           "a cancelled queued job waits for a worker (and keeps its tracker alive) instead of ending at once"),
    Mutant("MAX_SESSIONS_IGNORED", "backend/serving/tracking.py",
           "max_items=settings.max_sessions,", "max_items=settings.max_sessions + 100,",
           ("tests/test_app_sessions.py::test_max_sessions_evicts_the_least_recent_frees_it_and_rebuilds_it_the_same",),
           "MAX_SESSIONS not applied (no LRU eviction)"),
    Mutant("MASK_DIFFERS_IMAGE", "backend/ls/prompts.py",
           "    return diff > tolerance * max(1, np.count_nonzero(a | b))",
           "    return diff > tolerance * max(1, a.size)",
           ("tests/test_prompts.py::test_mask_differs_is_relative_to_the_union_not_the_image",),
           "mask_differs measured against the whole image instead of the union"),
)


def _copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", "node_modules", "__pycache__", ".pytest_cache", "artifacts", *_SHARED)
    shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True, dirs_exist_ok=True)
    for name in _SHARED:
        if (ROOT / name).exists():
            os.symlink((ROOT / name).resolve(), dest / name)


def run(mutant: Mutant, repo: Path, timeout_s: float) -> tuple[bool, str]:
    """Apply `mutant` in `repo`, run its tests, restore the file. Returns (caught, last lines of pytest's output)."""
    target = repo / mutant.path
    original = target.read_text()
    if original.count(mutant.old) != 1:
        return False, f"the text to mutate occurs {original.count(mutant.old)} times in {mutant.path} (stale mutant)"
    target.write_text(original.replace(mutant.old, mutant.new))
    caught, lines = True, []
    try:
        for test in mutant.tests:  # every listed test must fail on its own
            cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", test]
            try:
                proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                lines.append(f"{test}: timed out after {timeout_s:.0f} s (counted as caught: the mutant hangs it)")
                continue
            out = proc.stdout.strip().splitlines()
            lines.append(f"{test}: {out[-1] if out else proc.stderr.strip()[-300:]}")
            caught = caught and proc.returncode == 1  # 1 = tests failed; 2-5 = could not run them, not a catch
    finally:
        target.write_text(original)
    return caught, "\n    ".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="mutant names (default: all)")
    ap.add_argument("--list", action="store_true", help="print the mutants and the tests that catch them")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutants {sorted(unknown)}; --list shows them")
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.why}\n  {m.path}: {m.old.strip()!r} -> {m.new.strip()!r}\n  caught by {', '.join(m.tests)}")
        return 0
    missed = 0
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        repo = Path(tmp) / "repo"
        _copy_repo(repo)
        for m in chosen:
            t0 = time.monotonic()
            caught, tail = run(m, repo, args.timeout)
            missed += not caught
            print(f"{'CAUGHT' if caught else 'MISSED'} {m.name} ({time.monotonic() - t0:.0f} s): {m.why}\n    {tail}",
                  flush=True)
    print(f"{len(chosen) - missed}/{len(chosen)} mutants caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
