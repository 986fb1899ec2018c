"""Workloads: both CSV readers, their line-numbered errors, and bucketing on right-closed edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rayhet.errors import WorkloadError
from rayhet.workload import Distribution, bucketize, read_workload

ANCHORS = Path(__file__).resolve().parents[3] / "shared" / "anchors"
AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_pairs_with_crlf_and_no_header(tmp_path):
    f = tmp_path / "w.csv"
    f.write_bytes(b"10,20\r\n300,5\r\n\r\n7,1\r\n")
    w = read_workload(f)
    assert w.samples.tolist() == [[10, 20], [300, 5], [7, 1]]
    assert w.rate is None and w.source == str(f)


def test_azure_trace_measures_the_rate(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text(AZURE_HEAD + "2023-11-16 18:15:46.0000000,374,44\n2023-11-16 18:15:47.5000000,396,109\n"
                 "2023-11-16 18:15:48.0000000,879,55\n")
    w = read_workload(f)  # sniffed from the header
    assert w.samples.tolist() == [[374, 44], [396, 109], [879, 55]]
    assert w.rate == pytest.approx(2 / 2.0)  # 3 arrivals over 2 s: 2 gaps
    assert read_workload(f, "azure").rate == w.rate


@pytest.mark.parametrize(
    "text, fmt, where, words",
    [
        ("10,20\n30,x\n", "pairs", ":2:", "output_tokens is not an integer: 'x'"),
        ("10,20\n30,40,50\n", "pairs", ":2:", "expected 2 columns"),
        ("10,20\n\n-3,4\n", "pairs", ":3:", "input_tokens is negative"),
        (AZURE_HEAD + "2023-11-16 18:15:46.0,1,2\nnot-a-time,1,2\n", "auto", ":3:", "TIMESTAMP is not a date-time"),
        (AZURE_HEAD + "2023-11-16 18:15:46.0,1.5,2\n", "azure", ":2:", "ContextTokens is not an integer"),
        ("TIMESTAMP,Tokens\n2023-11-16 18:15:46.0,1\n", "azure", ":1:", "header lacks"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, text, fmt, where, words):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(WorkloadError) as e:
        read_workload(f, fmt)
    assert f"{f}{where}" in str(e.value) and words in str(e.value), str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(WorkloadError, match="no such workload file"):
        read_workload(tmp_path / "nope.csv")
    (tmp_path / "e.csv").write_text("\n")
    with pytest.raises(WorkloadError, match="no samples"):
        read_workload(tmp_path / "e.csv")


def test_bucketize_right_closed_and_clipping():
    s = np.array([[25, 25], [26, 25], [100, 100], [99, 1], [500, 7], [5, 900]])
    d = bucketize(s, [25, 100], [25, 100])
    # [500, 7] is above the input grid and [5, 900] above the output grid: both clipped into the last bucket
    np.testing.assert_allclose(d.fractions, np.array([[1, 1], [3, 1]]) / 6)
    assert d.clipped == pytest.approx(2 / 6)
    kept = bucketize(s, [25, 100], [25, 100], clip=False)
    assert kept.fractions.tolist() == [[0.25, 0.0], [0.5, 0.25]] and kept.clipped == pytest.approx(2 / 6)
    assert kept.fractions.sum() == pytest.approx(1)


def test_bucketize_rejects_bad_grids():
    with pytest.raises(WorkloadError, match="strictly increasing"):
        bucketize(np.array([[1, 1]]), [25, 25], [10])
    with pytest.raises(WorkloadError, match=r"\(n, 2\)"):
        bucketize(np.zeros((0, 2)), [25], [10])
    with pytest.raises(WorkloadError, match="sum to"):
        Distribution([1, 2], [1], np.array([[0.5], [0.2]]))


@pytest.mark.skipif(not (ANCHORS / "melange").is_dir(), reason="anchor data not present")
def test_lmsys_matches_the_anchor_distribution():
    w = read_workload(ANCHORS / "melange" / "lmsys-chat-1m.csv")
    assert w.samples.shape == (201_570, 2)
    d = bucketize(w.samples, [25, 100, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000], [25, 100, 250, 500, 1000, 2000])
    ref = np.loadtxt(ANCHORS / "melange" / "derived" / "arena_lmsys-chat-1m_10x6_distribution.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(d.fractions, ref[:, 1:], atol=1e-6)  # the anchor rounds to 6 decimals


@pytest.mark.skipif(not (ANCHORS / "traces").is_dir(), reason="anchor data not present")
def test_azure_conv_trace_rate():
    w = read_workload(ANCHORS / "traces" / "AzureLLMInferenceTrace_conv.csv")
    assert w.samples.shape == (19_366, 2)
    assert w.rate == pytest.approx(5.53, abs=0.01)  # README: 19,366 rows over 3,502 s
