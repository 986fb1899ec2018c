"""Regenerate profiles/llama-2-7b/*.json from Mélange's early Llama-2-7b measurements (the anchor file).

Usage (from the repository root):
    python profiles/llama-2-7b/make_profiles.py [--anchors ../shared/anchors/melange] [--out profiles/llama-2-7b]

The numbers are transcribed, not measured here: `derived/eval_ipynb_extracted_llama2-7b_profiles.json`
(Mélange's pre-release `eval/eval.ipynb`, litone01/melange-release @ 3d13f19) gives max req/s per bucket;
prices come from the paper's Table 1 (`derived/paper_table1_gpus.csv`), not the notebook's early H100 price.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_ANCHORS = HERE.parents[2] / "shared" / "anchors" / "melange"
SOURCE = "github.com/litone01/melange-release @ 3d13f19129c2fde97b288b7dfeee0d4b4027f1af, eval/eval.ipynb (gpu_info_llama7b)"

# anchor key -> (pool name, accelerator as Ray names it, Table 1 row, memory GB)
GPUS = {
    "L4": ("l4", "L4", "L4", 24),
    "A10G": ("a10g", "A10G", "A10G", 24),
    "A100": ("a100", "A100-80G", "A100-80G", 80),
    "H100": ("h100", "H100", "H100", 80),
}

NOTES = (
    "Transcribed from Melange's early (Feb 2024) eval notebook, before the paper; the SLO these max "
    "throughputs were measured under was not recorded (slo.unknown). Engine vLLM 0.2.7 per the repo's "
    "requirements.txt at that commit. Input rows 0-5 have upper edges 25..2000 (lb_policies.get_size_bucket_idx); "
    "rows 6-9 (A100/H100 only) have edges 4000/8000/12000/16000, inferred from the paper's Fig. 5 axis. "
    "The source's last row (12000-16000 input tokens) has only 3 of 6 entries (outputs <= 250); the missing "
    "entries are null (unservable). Price is the paper's Table 1 on-demand price, not the notebook's."
)


def _table1(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["gpu"]: row for row in csv.DictReader(f)}


def build(anchors: Path) -> dict[str, dict]:
    """Profile dicts (schema version 1) keyed by pool name."""
    src = json.loads((anchors / "derived" / "eval_ipynb_extracted_llama2-7b_profiles.json").read_text())
    prices = _table1(anchors / "derived" / "paper_table1_gpus.csv")
    all_in = src["input_bucket_upper_edges_tokens"]
    out_edges = src["output_bucket_upper_edges_tokens"]
    profiles = {}
    for key, (pool, accel, t1, mem) in GPUS.items():
        tputs = src["gpu_info_llama7b"][key]["tputs"]
        rows = [[float(v) for v in row] + [None] * (len(out_edges) - len(row)) for row in tputs]
        t = prices[t1]
        where = " ".join(x for x in (t["instance_provider"], t["instance_name"]) if x and x != "N.A.")
        profiles[pool] = {
            "schema_version": 1,
            "model": "meta-llama/Llama-2-7b-hf",
            "pool": pool,
            "engine": "vllm",
            "engine_version": "0.2.7",
            "hardware": {
                "accelerator": accel,
                "accelerator_count": 1,
                "vcpus": None,
                "memory_gb": float(mem),
                "description": f"{where} ({t['memory_GB']} GB, "
                f"{t['memory_bandwidth_GBps']} GB/s), as in Melange Table 1",
            },
            "price_per_hour": float(t["on_demand_price_usd_per_hr"]),
            "price_source": f"Melange paper (arXiv 2404.14527) Table 1, {where} on-demand" + (f"; {t['notes']}" if t["notes"] else ""),
            "slo": {"tpot_ms": None, "ttft_ms": None, "ttft_quantile": 0.9, "unknown": True},
            "input_edges": all_in[: len(rows)],
            "output_edges": out_edges,
            "max_rate": rows,
            "provenance": {
                "measured_by": "Melange authors (Griggs et al.), early eval notebook",
                "measured_at": "2024-02-22",
                "command": "python profiles/llama-2-7b/make_profiles.py (transcription of the anchor file)",
                "source": SOURCE,
                "notes": NOTES,
            },
            "sweep": [],
        }
    return profiles


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=Path, default=DEFAULT_ANCHORS, help="the melange anchor folder")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write <pool>.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE.parents[1]))
    from rayhet.profiles import parse_profile, save_profile  # validate through the real schema

    for pool, data in build(args.anchors).items():
        path = save_profile(parse_profile(data, f"<{pool}>"), args.out / f"{pool}.json")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
