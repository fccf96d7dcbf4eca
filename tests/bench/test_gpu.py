"""bench/gpu.py --dry: every section of the GPU bench runs on the CPU with tiny sizes and reports."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dry_run_covers_every_section(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "CURATE_TORCH_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--dry", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "**CPU dry run**" in text and "CPU (no CUDA device)" in text
    # (a) one row per precision asked, each falling back to fp32 on the CPU.
    for asked in ("fp32", "bf16", "fp16"):
        assert f"| {asked} | fp32 | cpu |" in text
    assert "## (b) scoring throughput" in text and "Curate predict_probs /s" in text
    # (c) the injected NaN was caught and the fit retried once, with the larger eps.
    assert "failed attempts: 1;" in text
    assert "non-finite loss at epoch 1, batch 2: restored the weights" in text and "eps 1e-04 (retry 1 of 2)" in text
    # (d) the finder measured and chose a size within the 48 train samples' bound.
    row = next(line for line in text.splitlines() if line.startswith("| 6 | 24 | 10 |"))
    chosen = int(row.split("|")[7])
    assert 2 <= chosen <= 24
    # (e) the same train job without a group and as a one-rank gloo job under DDP: every train
    # sample (48) predicted exactly once in each, and the accuracies within noise.
    plain = next(line for line in text.splitlines() if line.startswith("| 1 process, no group |"))
    one = next(line for line in text.splitlines() if line.startswith("| 1-rank DDP |"))
    assert plain.startswith("| 1 process, no group | none | 1 | 0 |") and plain.endswith("| yes (48 of 48) |")
    assert one.startswith("| 1-rank DDP | gloo | 1 | 1 |") and one.endswith("| yes (48 of 48) |")
    assert ": within noise. Every sample predicted exactly once in both jobs: yes." in text
    assert "(e) 1-rank DDP: backend gloo, world 1, 1 fit(s) under DDP" in proc.stdout
