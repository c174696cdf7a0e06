"""`infotok encode-dataset` on a local Ray: same tokens as `encode`, failures, resume after a kill, throughput.

One small Ray session (2 CPUs, 256 MB object store) serves the whole module; every pipeline run
tokenizes the built-in sample and two short clips with a tiny random-weight model.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from infotok.cli import main
from infotok.model import InfoTok
from infotok.video import synthetic_video, write_video

from .conftest import tiny_model

STATIC = dict(rate=0.5, strategy="static", selection="error", window=9, overlap=3)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module; its workers import this checkout's infotok."""
    import ray  # the `scale` extra: `make test` installs it, so a missing Ray fails here, never skips

    import infotok

    here = str(Path(infotok.__file__).resolve().parents[1])
    ray.init(num_cpus=2, object_store_memory=256 << 20, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": here}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The built-in sample, two short clips (other sizes and lengths), and a tiny checkpoint."""
    d = tmp_path_factory.mktemp("data")
    videos = [write_video(d / "videos" / "sample.mp4", synthetic_video(21, 48, 64, seed=1), fps=12),
              write_video(d / "videos" / "clip1.mp4", synthetic_video(13, 40, 56, seed=2), fps=8),
              write_video(d / "videos" / "clip2.mp4", synthetic_video(17, 48, 64, seed=3), fps=10)]
    return {"dir": d, "videos": videos, "checkpoint": tiny_model().save_pretrained(d / "ckpt")}


@pytest.fixture(scope="module")
def model(data) -> InfoTok:
    return InfoTok.from_pretrained(data["checkpoint"])


def same_windows(a, b) -> bool:
    return len(a) == len(b) and all(
        (x.start, x.end, x.rate) == (y.start, y.end, y.rate) and np.array_equal(x.mask, y.mask)
        and np.array_equal(x.indices, y.indices) and (x.score == y.score or (np.isnan(x.score) and np.isnan(y.score)))
        for x, y in zip(a, b))


def one_batch(videos, settings) -> dict:
    """cut_windows' rows of several videos as one batch, as Ray Data hands them to a model worker."""
    from infotok.dataset import cut_windows

    rows = [row for v in videos for row in cut_windows({"video": np.array([str(v)])}, settings)]
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("strategy,selection", [("global_elbo", "error"), ("uniform", "random")])
def test_window_tokenizer_batches_windows_of_several_videos_bit_identically_to_encode(data, model, strategy, selection):
    from infotok.dataset import WindowTokenizer, tokenize_settings
    from infotok.shards import table_windows

    settings = tokenize_settings(rate=0.5, strategy=strategy, selection=selection, window=9, overlap=3, seed=5)
    batch = one_batch(data["videos"], settings)
    # five windows share the 9x48x64 shape (three of the sample's, two of clip2's): one model call of B=5
    shapes = [(int(e - s), int(h), int(w)) for s, e, h, w in zip(batch["start"], batch["end"], batch["height"], batch["width"])]
    assert shapes.count((9, 48, 64)) == 5
    table = WindowTokenizer(str(data["checkpoint"]), "cpu", settings, model.weights_hash)(batch)
    assert table.column("error").to_pylist() == [""] * 8
    for v in data["videos"]:
        rows = table.filter(pc_equal(table, "video", str(v))).sort_by("window")
        reference = model.tokenize(v, rate=0.5, strategy=strategy, selection=selection, window=9, overlap=3, seed=5)
        assert same_windows(table_windows(rows), reference.windows)


def pc_equal(table, column, value):
    import pyarrow.compute as pc

    return pc.equal(table.column(column), value)


@pytest.fixture(scope="module")
def cli_run(ray_address, data, tmp_path_factory):
    """`infotok encode-dataset` on a text file listing the three videos and a corrupt one, 4 windows a batch."""
    d = tmp_path_factory.mktemp("cli")
    bad = d / "broken.mp4"
    bad.write_bytes(os.urandom(4096))
    listing = d / "videos.txt"
    listing.write_text("# the dataset\n" + "\n".join(str(v) for v in data["videos"]) + "\nbroken.mp4\n")
    code, out, err = _run_main(listing, d / "out", data["checkpoint"])
    return {"code": code, "out": out, "err": err, "dir": d / "out", "bad": bad}


def _run_main(listing, out, checkpoint):
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["encode-dataset", str(listing), "--out", str(out), "--checkpoint", str(checkpoint),
                     "--rate", "0.5", "--strategy", "static", "--window", "9", "--overlap", "3", "--batch-size", "4",
                     "--windows-per-shard", "4"])
    return code, stdout.getvalue(), stderr.getvalue()


def test_local_ray_run_writes_shards_whose_rows_decode_bit_identically_to_reconstruct(cli_run, data, model):
    from infotok.shards import load_video_tokens, read_manifest, verify_shards

    manifest = read_manifest(cli_run["dir"])
    assert sorted(v["video"] for v in manifest["videos"]) == sorted(str(v) for v in data["videos"])
    assert verify_shards(cli_run["dir"]) == [] and manifest["counts"]["windows"] == 3 + 2 + 3
    for v in data["videos"]:
        tokens = load_video_tokens(cli_run["dir"], str(v))
        reference = model.tokenize(v, **STATIC)
        assert tokens.header == reference.header and same_windows(tokens.windows, reference.windows)
        assert np.array_equal(model.detokenize(tokens), model.reconstruct(v, **STATIC))
    assert 0 < manifest["counts"]["tokens_kept"] < manifest["counts"]["tokens_total"]  # tokens were dropped
    assert "3 videos tokenized, 1 failed; 8 windows, 51 frames" in cli_run["out"]


def test_a_corrupt_video_among_good_ones_is_listed_and_the_rest_finish(cli_run):
    assert cli_run["code"] == 2
    failures = [json.loads(line) for line in (cli_run["dir"] / "failures.jsonl").read_text().splitlines()]
    assert [f["video"] for f in failures] == [str(cli_run["bad"])]
    assert failures[0]["error"].startswith(f"{cli_run['bad']}: not a readable video") and "\n" not in failures[0]["error"]
    assert "1 of 4 inputs failed" in cli_run["err"] and str(cli_run["bad"]) in cli_run["err"]


@pytest.fixture(scope="module")
def throughput(ray_address, data, tmp_path_factory):
    """measure_throughput with one model worker, uniform rates and random selection (the per-video
    generator's draws), windows of all three videos batched 4 at a time."""
    from infotok.dataset import measure_throughput

    out = tmp_path_factory.mktemp("throughput")
    report = measure_throughput(data["videos"], data["checkpoint"], workers=1, batch_size=4, out=out, rate=0.5,
                                strategy="uniform", selection="random", window=9, overlap=3, seed=7)
    return report, out


def test_uniform_rates_and_random_selection_match_encode_though_batched_across_videos(throughput, data, model):
    from infotok.shards import load_video_tokens

    _, out = throughput
    for v in data["videos"]:
        tokens = load_video_tokens(out, str(v))
        reference = model.tokenize(v, rate=0.5, strategy="uniform", selection="random", window=9, overlap=3, seed=7)
        assert same_windows(tokens.windows, reference.windows) and tokens.header == reference.header
    # each video has its own generator seeded with --seed, as `infotok encode --seed 7` of each file:
    # its windows draw different rates, and window i of every video the same one
    rates = [[w.rate for w in load_video_tokens(out, str(v)).windows] for v in data["videos"]]
    assert len(set(rates[0])) == 3 and rates[1] == rates[0][:2] and rates[2] == rates[0]


def test_measure_throughput_reports_speed_memory_and_bytes(throughput):
    report, _ = throughput
    assert report["videos"] == 3 and report["windows"] == 8 and report["frames"] == 21 + 13 + 17
    assert report["frames_per_s"] > 0 and report["windows_per_s"] > 0 and report["elapsed_s"] >= report["pipeline_s"]
    assert report["frames_per_s_after_load"] >= report["frames_per_s"] and report["model_load_s"] < report["pipeline_s"]
    assert list(report["busy_s"]) == list(report["peak_rss_mib"]["tokenizer"])
    tokenizers, decoders = report["peak_rss_mib"]["tokenizer"], report["peak_rss_mib"]["decoder"]
    assert len(tokenizers) == 1 and all(v > 50 for v in tokenizers.values()) and decoders
    assert not set(tokenizers) & set(decoders)  # videos were read in CPU tasks, not on the model worker
    assert report["shard_bytes_per_window"] > 0 and report["itok_bytes_per_window"] > 0


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import pyarrow.parquet as pq
    import ray
    from infotok.dataset import encode_dataset

    address, src, out, checkpoint, *videos = sys.argv[1:]
    ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": src}}, log_to_driver=False,
             logging_level="ERROR")
    real, written = pq.write_table, []

    def write_then_die(*args, **kwargs):  # the second shard is written under its temporary name: die there
        real(*args, **kwargs)
        written.append(1)
        if len(written) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    pq.write_table = write_then_die
    encode_dataset(videos, out, checkpoint, rate=0.5, strategy="static", window=9, overlap=3, windows_per_shard=1)
    sys.exit("not killed")
""")


def test_resume_after_a_killed_run_keeps_finished_shards_and_redoes_only_the_rest(ray_address, data, model, tmp_path):
    from infotok.dataset import encode_dataset
    from infotok.shards import load_video_tokens, read_manifest, verify_shards

    out = tmp_path / "out"
    env = os.environ | {"PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, ray_address, SRC, out, data["checkpoint"],
                             *data["videos"]], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    manifest = read_manifest(out)
    assert len(manifest["shards"]) == 1 and len(manifest["videos"]) == 1
    finished = out / manifest["shards"][0]["file"]
    before = (finished.read_bytes(), finished.stat().st_mtime_ns)
    assert list(out.glob(".shard-*.tmp")), "the kill should leave the second shard half done"

    run = encode_dataset(data["videos"], out, data["checkpoint"], rate=0.5, strategy="static", window=9, overlap=3,
                         windows_per_shard=1)
    assert (run.skipped, run.completed, run.failures) == (1, 2, [])
    assert (finished.read_bytes(), finished.stat().st_mtime_ns) == before
    assert not list(out.glob(".*.tmp")) and verify_shards(out) == []
    manifest = read_manifest(out)
    assert sorted(v["video"] for v in manifest["videos"]) == sorted(str(v) for v in data["videos"])
    assert sorted(p.name for p in out.glob("shard-*")) == sorted(s["file"] for s in manifest["shards"])
    for v in data["videos"]:
        assert same_windows(load_video_tokens(out, str(v)).windows, model.tokenize(v, **STATIC).windows)

    again = encode_dataset(data["videos"], out, data["checkpoint"], rate=0.5, strategy="static", window=9, overlap=3)
    assert (again.skipped, again.completed, again.shards) == (3, 0, [])


def test_more_workers_than_the_cluster_has_cpus_is_refused_before_any_work(ray_address, data, tmp_path):
    from infotok.dataset import encode_dataset

    with pytest.raises(ValueError, match="need 4 CPUs; the Ray cluster has 2"):
        encode_dataset(data["videos"], tmp_path / "out", data["checkpoint"], concurrency=3)
    assert not list((tmp_path / "out").glob("shard-*"))


def test_without_ray_the_command_says_how_to_install_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, out, err = run_cli(capsys, "encode-dataset", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "pip install 'infotok[scale]'" in err and out == ""


def test_encode_dataset_has_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["encode-dataset", "--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0 and "usage: infotok encode-dataset" in text
    for option in ("--out", "--window", "--overlap", "--size", "--rate", "--strategy", "--selection", "--seed",
                   "--num-gpus-per-worker", "--batch-size", "--concurrency", "--device", "--ray-address"):
        assert option in text
