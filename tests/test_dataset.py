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
from infotok.spec import TokenizeSpec, Windowing
from infotok.video import read_video, synthetic_video, write_video

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
    ray.init(
        num_cpus=2,
        object_store_memory=256 << 20,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": here}},
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """The built-in sample, two short clips (other sizes and lengths), and a tiny checkpoint."""
    d = tmp_path_factory.mktemp("data")
    videos = [
        write_video(d / "videos" / "sample.mp4", synthetic_video(21, 48, 64, seed=1), fps=12),
        write_video(d / "videos" / "clip1.mp4", synthetic_video(13, 40, 56, seed=2), fps=8),
        write_video(d / "videos" / "clip2.mp4", synthetic_video(17, 48, 64, seed=3), fps=10),
    ]
    return {"dir": d, "videos": videos, "checkpoint": tiny_model().save_pretrained(d / "ckpt")}


@pytest.fixture(scope="module")
def model(data) -> InfoTok:
    return InfoTok.from_pretrained(data["checkpoint"])


def same_windows(a, b) -> bool:
    return len(a) == len(b) and all(
        (x.start, x.end, x.rate) == (y.start, y.end, y.rate)
        and np.array_equal(x.mask, y.mask)
        and np.array_equal(x.indices, y.indices)
        and (x.score == y.score or (np.isnan(x.score) and np.isnan(y.score)))
        for x, y in zip(a, b)
    )


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
    shapes = [
        (int(e - s), int(h), int(w))
        for s, e, h, w in zip(batch["start"], batch["end"], batch["height"], batch["width"])
    ]
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
        code = main(
            [
                "encode-dataset",
                str(listing),
                "--out",
                str(out),
                "--checkpoint",
                str(checkpoint),
                "--rate",
                "0.5",
                "--strategy",
                "static",
                "--window",
                "9",
                "--overlap",
                "3",
                "--batch-size",
                "4",
                "--windows-per-shard",
                "4",
            ]
        )
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
    assert (
        failures[0]["error"].startswith(f"{cli_run['bad']}: not a readable video") and "\n" not in failures[0]["error"]
    )
    assert "1 of 4 inputs failed" in cli_run["err"] and str(cli_run["bad"]) in cli_run["err"]


@pytest.fixture(scope="module")
def throughput(ray_address, data, tmp_path_factory):
    """measure_throughput with one model worker, uniform rates and random selection (the per-video
    generator's draws), windows of all three videos batched 4 at a time."""
    from infotok.dataset import measure_throughput

    out = tmp_path_factory.mktemp("throughput")
    report = measure_throughput(
        data["videos"],
        data["checkpoint"],
        workers=1,
        batch_size=4,
        out=out,
        rate=0.5,
        strategy="uniform",
        selection="random",
        window=9,
        overlap=3,
        seed=7,
    )
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
    killed = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, ray_address, SRC, out, data["checkpoint"], *data["videos"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    manifest = read_manifest(out)
    assert len(manifest["shards"]) == 1 and len(manifest["videos"]) == 1
    finished = out / manifest["shards"][0]["file"]
    before = (finished.read_bytes(), finished.stat().st_mtime_ns)
    assert list(out.glob(".shard-*.tmp")), "the kill should leave the second shard half done"

    run = encode_dataset(
        data["videos"], out, data["checkpoint"], rate=0.5, strategy="static", window=9, overlap=3, windows_per_shard=1
    )
    assert (run.skipped, run.completed, run.failures) == (1, 2, [])
    assert (finished.read_bytes(), finished.stat().st_mtime_ns) == before
    assert not list(out.glob(".*.tmp")) and verify_shards(out) == []
    manifest = read_manifest(out)
    assert sorted(v["video"] for v in manifest["videos"]) == sorted(str(v) for v in data["videos"])
    assert sorted(p.name for p in out.glob("shard-*")) == sorted(s["file"] for s in manifest["shards"])
    for v in data["videos"]:
        assert same_windows(load_video_tokens(out, str(v)).windows, model.tokenize(v, **STATIC).windows)

    # the same settings as objects: a rerun that finds every video done (settings differing would be refused)
    spec, windowing = TokenizeSpec(rate=0.5, strategy="static"), Windowing(window=9, overlap=3)
    again = encode_dataset(data["videos"], out, data["checkpoint"], spec=spec, windowing=windowing)
    assert (again.skipped, again.completed, again.shards) == (3, 0, [])
    with pytest.raises(TypeError, match="unexpected keyword.*windw"):
        encode_dataset(data["videos"], out, data["checkpoint"], spec=spec, windw=9)


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
    for option in (
        "--out",
        "--window",
        "--overlap",
        "--size",
        "--rate",
        "--strategy",
        "--selection",
        "--seed",
        "--num-gpus-per-worker",
        "--batch-size",
        "--concurrency",
        "--device",
        "--ray-address",
    ):
        assert option in text


# ------------------------------------------------------------------------ --budget run over a dataset
RUN = dict(rate=0.6, fill="hold", window=9, overlap=3, max_size=256)  # what `--fill hold --rate 0.6 ...` gives


def run_argv(**settings) -> list[str]:
    s = RUN | settings
    return ["--rate", s["rate"], "--fill", s["fill"], "--window", s["window"], "--overlap", s["overlap"]]


@pytest.fixture(scope="module")
def budget_data(data) -> dict:
    """A moving clip (the sample), a still one (one frame repeated) and noise, of other sizes and
    lengths, and a tiny checkpoint with a value predictor and calibrated hold thresholds."""
    d = data["dir"] / "budget"
    noise = np.random.default_rng(0).integers(0, 256, (13, 40, 56, 3), dtype=np.uint8)
    videos = [
        data["videos"][0],
        write_video(d / "still.mp4", np.repeat(synthetic_video(1, 48, 64, seed=4), 17, axis=0), fps=10),
        write_video(d / "noise.mp4", noise, fps=8),
    ]
    checkpoint = tiny_model(predictor=True).save_pretrained(d / "ckpt")
    return {"dir": d, "videos": videos, "checkpoint": checkpoint, "model": InfoTok.from_pretrained(checkpoint)}


@pytest.fixture(scope="module")
def budget_run(ray_address, budget_data, tmp_path_factory):
    """`infotok encode-dataset --budget run` of the three clips, uninterrupted: the reference."""
    out = tmp_path_factory.mktemp("budget-run") / "out"
    code, stdout, stderr = _capture(
        [
            "encode-dataset",
            *budget_data["videos"],
            "--out",
            out,
            "--checkpoint",
            budget_data["checkpoint"],
            "--budget",
            "run",
            *run_argv(),
            "--batch-size",
            4,
        ]
    )
    assert code == 0, stderr
    return {"dir": out, "out": stdout}


def _capture(argv):
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in argv])
    return code, stdout.getvalue(), stderr.getvalue()


def budget_tokens(root, videos) -> dict:
    from infotok.shards import load_video_tokens

    return {str(v): load_video_tokens(root, str(v)) for v in videos}


def test_a_run_budget_keeps_exactly_the_asked_share_of_all_tokens_of_the_dataset(budget_run, budget_data):
    from infotok.router import budget_count
    from infotok.selection import kept_count
    from infotok.shards import read_manifest, video_id

    manifest = read_manifest(budget_run["dir"])
    counts, settings = manifest["counts"], manifest["settings"]
    windows = [w for t in budget_tokens(budget_run["dir"], budget_data["videos"]).values() for w in t.windows]
    sizes = [w.num_tokens for w in windows]
    assert counts["tokens_total"] == sum(sizes) and counts["tokens_kept"] == sum(w.kept for w in windows)
    assert counts["tokens_kept"] == round(RUN["rate"] * sum(sizes)) == budget_count(RUN["rate"], sizes)
    # each window's rate stands for its count exactly, and stays within [1/16, 1]
    assert all(kept_count(w.rate, w.num_tokens) == w.kept and 1 / 16 <= w.rate <= 1 for w in windows)
    assert settings["budget"] == "run" and isinstance(settings["shared_threshold"], float)
    assert sorted(p.name for p in (budget_run["dir"] / "budget").glob("*.npz")) == sorted(
        f"{video_id(str(v))}.npz" for v in budget_data["videos"]
    )


def kept_shares(root, videos) -> list[float]:
    return [
        sum(w.kept for w in t.windows) / sum(w.num_tokens for w in t.windows)
        for t in budget_tokens(root, videos).values()
    ]


def test_a_run_budget_stays_adaptive_noise_gets_more_than_the_asked_share(budget_run, budget_data):
    moving, still, noise = kept_shares(budget_run["dir"], budget_data["videos"])
    assert max(moving, still) < RUN["rate"] < noise


def test_a_run_budget_gives_a_still_clip_fewer_tokens_than_a_moving_one(ray_address, budget_data, tmp_path):
    """On the shipped checkpoint, whose codes hold still where the picture does. The tiny random model's codes drift
    on a still clip about as much as on the moving one, so which of the two kept more came down to the CPU's float
    kernels (under ATEN_CPU_CAPABILITY=default the still clip kept more)."""
    from infotok.dataset import encode_dataset

    encode_dataset(budget_data["videos"], tmp_path / "out", budget="run", **RUN)
    moving, still, noise = kept_shares(tmp_path / "out", budget_data["videos"])
    assert still < moving < noise


def test_run_budget_tokens_are_encodes_at_the_allocated_rates(budget_run, budget_data):
    model = budget_data["model"]
    for v, tokens in budget_tokens(budget_run["dir"], budget_data["videos"]).items():
        rates = [w.rate for w in tokens.windows]
        reference = model.iter_tokenize(v, rates=rates, **RUN).collect()
        assert same_windows(tokens.windows, reference.windows) and tokens.header == reference.header


def test_the_summary_prints_the_realized_rate_beside_the_asked_one(budget_run, cli_run):
    assert "rate 0.600 realized (asked 0.6, run)" in budget_run["out"]
    assert "realized (asked 0.5, calibrated)" in cli_run["out"]


MEASURE_KILL_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import ray
    import infotok.dataset as dataset
    import infotok.dataset_budget as budget

    address, src, out, checkpoint, settings, *videos = sys.argv[1:]
    ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": src}}, log_to_driver=False,
             logging_level="ERROR")
    real = budget.save_statistics

    def save_then_die(*args, **kwargs):  # the first video's statistics are stored: die before the others
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    budget.save_statistics = save_then_die
    dataset.encode_dataset(videos, out, checkpoint, budget="run", **json.loads(settings))
    sys.exit("not killed")
""")


def test_a_run_budget_killed_in_its_first_pass_resumes_to_the_uninterrupted_runs_tokens(
    ray_address, budget_run, budget_data, tmp_path
):
    from infotok.dataset import encode_dataset
    from infotok.shards import read_manifest, verify_shards

    out, videos, checkpoint = tmp_path / "out", budget_data["videos"], budget_data["checkpoint"]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(
        [sys.executable, "-c", MEASURE_KILL_SCRIPT, ray_address, SRC, out, checkpoint, json.dumps(RUN), *videos],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    (stored,) = (out / "budget").glob("*.npz")
    before = stored.stat().st_mtime_ns
    assert not (out / "manifest.json").exists()

    run = encode_dataset(videos, out, checkpoint, budget="run", windows_per_shard=1, **RUN)
    assert (run.skipped, run.completed, run.failures) == (0, 3, []) and stored.stat().st_mtime_ns == before
    assert read_manifest(out)["settings"] == read_manifest(budget_run["dir"])["settings"]  # the same allocation
    reference = budget_tokens(budget_run["dir"], videos)
    assert all(same_windows(t.windows, reference[v].windows) for v, t in budget_tokens(out, videos).items())

    # a shard lost after the run, and one video's statistics: that video is measured and tokenized
    # again, the others are kept, and the allocation is the same
    manifest = read_manifest(out)
    lost = manifest["videos"][0]
    (out / lost["shard"]).unlink()
    (out / "budget" / f"{lost['video_id']}.npz").unlink()
    again = encode_dataset(videos, out, checkpoint, budget="run", windows_per_shard=1, **RUN)
    assert (again.skipped, again.completed, again.failures) == (2, 1, []) and verify_shards(out) == []
    assert all(same_windows(t.windows, reference[v].windows) for v, t in budget_tokens(out, videos).items())
    assert again.realized_rate == read_manifest(budget_run["dir"])["counts"]["tokens_kept"] / again.folder_tokens


def test_resuming_a_run_budget_with_other_settings_is_refused_before_any_pass(budget_run, budget_data):
    from infotok.dataset import encode_dataset
    from infotok.shards import ShardError

    videos, checkpoint = budget_data["videos"], budget_data["checkpoint"]
    with pytest.raises(ShardError, match=r"other settings rate 0.6 \(now 0.3\)"):
        encode_dataset(videos, budget_run["dir"], checkpoint, budget="run", **(RUN | {"rate": 0.3}))
    with pytest.raises(ShardError, match=r"other settings budget 'run' \(now 'calibrated'\)"):
        encode_dataset(videos, budget_run["dir"], checkpoint, **RUN)


def test_a_run_budget_under_mask_spends_the_exact_budget_on_predicted_curves(ray_address, budget_data, tmp_path):
    from infotok.dataset import encode_dataset
    from infotok.shards import read_manifest

    settings = RUN | {"fill": "mask", "strategy": "rd", "rate": 0.3}
    run = encode_dataset(
        budget_data["videos"], tmp_path / "out", budget_data["checkpoint"], budget="run", batch_size=4, **settings
    )
    manifest = read_manifest(tmp_path / "out")
    assert run.folder_kept == round(0.3 * run.folder_tokens) and run.realized_rate == pytest.approx(0.3, abs=1e-3)
    assert manifest["settings"]["budget"] == "run" and "shared_slope" in manifest["settings"]


def test_a_run_budget_needs_the_rd_strategy(capsys, budget_data, tmp_path):
    code, out, err = run_cli(
        capsys,
        "encode-dataset",
        budget_data["videos"][0],
        "--out",
        tmp_path / "out",
        "--checkpoint",
        budget_data["checkpoint"],
        "--budget",
        "run",
        "--strategy",
        "static",
    )
    assert code == 2 and err.count("\n") == 1 and "strategy rd" in err and out == ""
    assert not (tmp_path / "out").exists()


def test_encode_dataset_help_says_what_rate_means_under_each_budget(capsys):
    with pytest.raises(SystemExit):
        main(["encode-dataset", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--budget {calibrated,run}" in text and "exactly --rate over all the inputs" in text
    assert "calibrated for --rate on the checkpoint's training clips" in text


# ------------------------------------------- the allocation from compact statistics (no Ray, no model pass)
@pytest.fixture(scope="module")
def clip_codes(budget_data) -> list:
    """Latent codes of windows that move little, much, and not at all."""
    model = budget_data["model"]
    clips = [synthetic_video(9, 32, 32, seed=s) for s in range(3)] + [np.repeat(synthetic_video(1, 32, 32), 9, 0)]
    clips.append(np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8))
    import torch

    return list(model.latent_codes(torch.from_numpy(np.stack(clips))))


def test_hold_counts_are_hold_rates_times_the_tokens_at_every_threshold(clip_codes, budget_data):
    from infotok.router import hold_counts, hold_grid, hold_rates

    grid = hold_grid(budget_data["model"].code_range())
    counts = hold_counts(torch_stack(clip_codes), grid)
    n = clip_codes[0][0].numel()
    assert counts.shape == (len(clip_codes), len(grid)) and np.all(counts[:, 0] == n)  # the grid starts at every token
    first = clip_codes[0].shape[2] * clip_codes[0].shape[3]
    assert np.allclose(counts[:, -1], first)  # and ends at the first latent frame
    for g in range(0, len(grid), 7):
        rates = hold_rates(torch_stack(clip_codes), float(grid[g]))
        assert np.allclose(np.clip(counts[:, g] / n, 1 / 16, 1), rates, rtol=0, atol=1e-12)


def torch_stack(codes):
    import torch

    return torch.stack(codes)


@pytest.mark.parametrize("rate", [1 / 16, 0.1, 0.25, 0.4, 0.5, 0.77, 1.0])
def test_a_shared_threshold_from_the_grid_keeps_exactly_the_budget(clip_codes, budget_data, rate):
    from infotok.router import budget_count, hold_counts, hold_grid, min_kept, shared_hold_counts

    grid = hold_grid(budget_data["model"].code_range())
    windows = clip_codes + [c[:, :2] for c in clip_codes]  # windows of two sizes
    sizes = [c[0].numel() for c in windows]
    counts = np.concatenate([hold_counts(c[None], grid) for c in windows])
    kept, threshold = shared_hold_counts(counts, sizes, grid, rate)
    assert sum(kept) == budget_count(rate, sizes) and all(min_kept(n) <= k <= n for k, n in zip(kept, sizes))
    assert shared_hold_counts(counts, sizes, grid, rate) == (kept, threshold)  # deterministic
    assert grid[0] <= threshold <= grid[-1]
    if rate == 0.5:  # the still window keeps the least, noise the most
        still, noise = kept[3] / sizes[3], kept[4] / sizes[4]
        assert still <= min(kept[i] / sizes[i] for i in range(3)) < noise == max(k / n for k, n in zip(kept[:5], sizes))


def test_a_shared_budget_breaks_ties_by_window_order_and_respects_the_rate_bounds():
    from infotok.router import exact_counts, shared_hold_counts

    same = np.tile(np.linspace(100, 10, 5), (3, 1))  # three identical windows of 100 tokens
    kept, _ = shared_hold_counts(same, [100] * 3, np.arange(5.0), 0.5)
    assert kept == [50, 50, 50]
    kept, _ = shared_hold_counts(same, [100] * 3, np.arange(5.0), 0.505)  # 151.5 -> 152: one more to the first
    assert kept == [51, 51, 50]
    assert exact_counts(np.array([2.5, 2.5, 2.5]), [0] * 3, [5] * 3, 8) == [3, 3, 2]
    # 1/16 of 40 tokens is 2.5: a window keeps at least 3 (3/40 is a valid rate, 2/40 is not)
    assert shared_hold_counts(np.full((2, 3), 40.0), [40, 40], np.arange(3.0), 1 / 16)[0] == [3, 3]


def test_a_shared_budget_on_predicted_curves_is_exact_and_spends_where_the_curve_is_steep():
    from infotok.router import budget_count, shared_curve_counts

    flat = 30 + np.linspace(0, 1, 16)
    steep = 20 + 15 * np.sqrt(np.linspace(0, 1, 16))
    sizes = [144, 144, 96, 140]
    for rate in (1 / 16, 0.2, 0.5, 0.9, 1.0):
        kept, slope = shared_curve_counts(np.stack([flat, steep, steep, flat]), sizes, rate)
        assert sum(kept) == budget_count(rate, sizes) and np.isfinite(slope)
        if rate == 0.5:
            assert kept[1] > kept[0] and kept[1] / sizes[1] > kept[3] / sizes[3]


def test_encode_dataset_writes_1d_shards_on_ray_that_read_back_as_the_same_tokens(ray_address, tmp_path, capsys):
    model = InfoTok.from_pretrained(layout="1d")
    from infotok.shards import TokenShards, load_video_tokens, read_manifest

    videos = []
    for seed, frames in ((1, 20), (2, 40)):
        videos.append(tmp_path / f"v{seed}.mp4")
        write_video(videos[-1], synthetic_video(frames, 64, 128, seed=seed), fps=20.0)
    argv = ["encode-dataset", str(tmp_path / "v1.mp4"), str(tmp_path / "v2.mp4"), "--layout", "1d"]
    assert main([*argv, "--out", str(tmp_path / "shards"), "--tokens", "32"]) == 0
    assert "2 videos tokenized; 3 windows" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["model"]["layout"] == "1d" and manifest["settings"]["tokens"] == 32
    # a rate is shared among each video's windows by the driver, as tokenize shares it
    assert main([*argv, "--out", str(tmp_path / "shared"), "--rate", "0.1"]) == 0
    for v in videos:
        frames = read_video(v)[0]
        for folder, direct in (
            ("shards", model.tokenize(frames, tokens=32)),
            ("shared", model.tokenize(frames, rate=0.1)),
        ):
            stored = load_video_tokens(tmp_path / folder, str(v.resolve()))
            assert stored.header.layout == "1d" and [w.kept for w in stored.windows] == [w.kept for w in direct.windows]
            for a, b in zip(stored.windows, direct.windows):
                assert np.array_equal(a.indices, b.indices) and a.rate == b.rate
        assert model.detokenize(stored.truncate(8)).shape == frames.shape
    items = list(TokenShards(tmp_path / "shards", mode="sequence"))
    assert len(items) == 3 and all(len(item["tokens"]) == 32 for item in items)  # coarse-to-fine sequences
    assert main([*argv, "--out", str(tmp_path / "shards"), "--tokens", "32"]) == 0  # a rerun resumes: nothing to do
    assert main([*argv, "--out", str(tmp_path / "shards"), "--tokens", "16"]) != 0  # other settings: refused, said
