"""Many runs at once on one machine: `ttt-hf` commands in parallel processes sharing its cores (and its GPU)."""

import sys
from pathlib import Path

from .run_files import RESULTS_FILE


def run_many(commands: dict[str, list[str]], root, parallel: int = 1, poll: float = 2.0) -> dict[str, int]:
    """Run `ttt-hf` commands (name -> its arguments) `parallel` at a time (0: all at once), one process each, each
    with `--output_dir ROOT/NAME` and its output in ROOT/NAME.log; runs whose ROOT/NAME/all_results.json exists are
    done and skipped. On a CPU machine each process gets OMP_NUM_THREADS = TORCHINDUCTOR_COMPILE_THREADS = cores //
    runs at once, capped by the caller's OMP_NUM_THREADS if set (two runners side by side, each told one thread); on
    a GPU machine the processes share the device and the caller's settings pass through. Interrupted, it stops the
    runs still going. Returns name -> exit code, in order."""
    import os
    import subprocess
    import time

    import torch

    if parallel < 0:
        raise ValueError(f"--parallel must be a number of processes (0: all at once), got {parallel}.")
    names = list(commands)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    pending = [name for name in names if not (root / name / RESULTS_FILE).is_file()]
    for name in names:
        if name not in pending:
            print(f"{name}: done already ({root / name / RESULTS_FILE})", flush=True)
    parallel = min(parallel or len(pending), len(pending)) or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // parallel)
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdecimal() and int(given) > 0:  # the caller's own cap (OpenMP ignores 0 and what is not a number)
        threads = min(threads, int(given))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCHINDUCTOR_COMPILE_THREADS": str(threads)}
    if torch.cuda.is_available():  # a user's own thread settings win where the GPU does the work
        env = {
            **env,
            **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS") if k in os.environ},
        }
    running, codes, start = {}, {}, time.time()
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name = pending.pop(0)
                command = [sys.executable, "-m", "ttt_hf.cli", *commands[name], "--output_dir", str(root / name)]
                log = open(root / f"{name}.log", "w")  # noqa: SIM115  (closed when the run ends)
                running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log)
                print(f"[{time.time() - start:7.0f} s] started {name} (log: {root / name}.log)", flush=True)
            time.sleep(poll)
            for name, (process, log) in list(running.items()):
                if process.poll() is not None:
                    log.close()
                    codes[name] = process.returncode
                    del running[name]
                    state = "finished" if process.returncode == 0 else f"FAILED (exit code {process.returncode})"
                    print(f"[{time.time() - start:7.0f} s] {state}: {name}", flush=True)
    finally:  # interrupted (Ctrl-C, a timeout): stop the runs still going, and wait for them
        for process, _ in running.values():
            process.terminate()
        for name, (process, log) in running.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
            print(f"[{time.time() - start:7.0f} s] stopped: {name}", flush=True)
    return {name: codes.get(name, 0) for name in names}


__all__ = ["run_many"]
