"""Training end to end through the CLI: every kind, run-directory files, checkpoints, resume,
signals, torchrun, and the errors users can cause.

Runs are tiny (16x16 images, 64 of them, latent 8, batch 8, a few steps) so the whole module
takes well under a minute on 2 CPU cores; what is checked is behaviour, not image quality.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganport.cli import main
from ganport.errors import InvalidInputError
from ganport.trainer import TrainConfig, train
from ganport.trainer.checkpoint import build_from_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
KINDS = ("gan", "dcgan", "cgan", "cdcgan", "aae")
TINY = ["--image-size", "16", "--n-samples", "64", "--batch-size", "8", "--latent-dim", "8",
        "--device", "cpu"]
METRIC_KEYS = {"step", "epoch", "d_loss", "g_loss", "d_real_loss", "d_fake_loss", "d_x", "d_g_z", "time"}
AAE_KEYS = {"recon_loss", "z_mean", "z_std"}
CHECKPOINT_KEYS = {"format", "format_version", "ganport_version", "kind", "networks", "ema_generator",
                   "optimizers", "config", "step", "epoch", "rng", "data"}


def _train_cli(out: Path, kind: str, *extra: str, dataset: str = "digits", run: str = "run") -> int:
    return main(["train", kind, "--dataset", dataset, *TINY, "--out-dir", str(out), "--run-name", run,
                 *extra])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _max_weight_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ------------------------------------------------------------------------------ every kind


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_through_the_cli(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dataset = "fractal-dream" if kind == "aae" else "digits"  # the AAE on an unlabelled set
    rc = _train_cli(tmp_path, kind, "--steps", "4", "--sample-interval", "2", "--checkpoint-interval", "2",
                    "--log-every", "2", dataset=dataset)
    out = capsys.readouterr().out
    assert rc == 0
    run_dir = tmp_path / "run"
    assert f"run directory: {run_dir}" in out
    assert f"checkpoint: {run_dir / 'checkpoints' / 'latest.pt'}" in out

    config = json.loads((run_dir / "config.json").read_text())
    assert config["kind"] == kind and config["dataset"] == dataset and config["steps"] == 4
    assert TrainConfig.from_dict(config).run_name == "run"

    rows = _metrics(run_dir)
    assert [r["step"] for r in rows] == [2, 4]
    expected = METRIC_KEYS | (AAE_KEYS if kind == "aae" else set())
    for row in rows:
        assert expected <= set(row)
        assert all(math.isfinite(row[k]) for k in expected)

    conditional = kind in ("cgan", "cdcgan")
    for step in (2, 4):
        grid = Image.open(run_dir / "samples" / f"step_{step:06d}.png")
        # 8 columns of 16 px + 2 px padding; conditional grids have one row per class (10 digits).
        rows_expected = 10 if conditional else 8
        assert grid.size == (8 * 18 + 2, rows_expected * 18 + 2)
    if kind == "aae":
        assert (run_dir / "samples" / "recon_step_000004.png").is_file()
    assert Image.open(run_dir / "loss_curve.png").size[0] > 100

    ckpt_dir = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["latest.pt", "step_000002.pt", "step_000004.pt"]
    raw = torch.load(ckpt_dir / "latest.pt", weights_only=True)
    assert CHECKPOINT_KEYS <= set(raw)
    assert raw["kind"] == kind and raw["step"] == 4
    roles = {"generator", "discriminator"} | ({"encoder"} if kind == "aae" else set())
    assert set(raw["networks"]) == roles and set(raw["optimizers"]) == roles
    for entry in raw["networks"].values():
        assert {"class", "init_args", "state_dict"} <= set(entry)
    assert raw["data"]["dataset"] == dataset
    assert raw["data"]["image_shape"] == [1, 16, 16]
    assert raw["data"]["class_names"] == ([str(d) for d in range(10)] if dataset == "digits" else [])
    assert raw["config"] == config
    generator = build_from_checkpoint(load_checkpoint(ckpt_dir / "latest.pt"))
    z = torch.randn(2, 8)
    with torch.no_grad():
        image = generator(z, torch.tensor([0, 1])) if conditional else generator(z)
    assert image.shape == (2, 1, 16, 16)


@pytest.mark.parametrize("loss", ["minimax", "lsgan", "hinge"])
def test_other_losses_train(loss: str, tmp_path: Path) -> None:
    assert _train_cli(tmp_path, "gan", "--steps", "3", "--log-every", "1", "--loss", loss) == 0
    rows = _metrics(tmp_path / "run")
    assert len(rows) == 3
    assert all(math.isfinite(r[k]) for r in rows for k in ("d_loss", "g_loss", "d_x", "d_g_z"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"] == loss
    if loss == "minimax":
        assert all(r["g_loss"] < 0 for r in rows)  # -BCE(D(G(z)), 0) is negative


def test_spectral_norm_and_conditional_bn_train_through_the_cli(tmp_path: Path) -> None:
    assert _train_cli(tmp_path, "cgan", "--steps", "3", "--log-every", "1", "--loss", "hinge",
                      "--spectral-norm", "--conditional-bn") == 0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["config"]["spectral_norm"] is True and ckpt["config"]["conditional_bn"] is True
    assert ckpt["networks"]["discriminator"]["init_args"]["spectral_norm"] is True
    generator = build_from_checkpoint(ckpt)
    assert generator.init_args["conditional_bn"] is True
    assert generator(torch.randn(2, 8), torch.tensor([0, 1])).shape == (2, 1, 16, 16)


def test_amp_on_cpu_uses_bfloat16_and_trains(tmp_path: Path) -> None:
    assert _train_cli(tmp_path, "cgan", "--steps", "3", "--log-every", "1", "--amp") == 0
    rows = _metrics(tmp_path / "run")
    assert all(math.isfinite(r["d_loss"]) and math.isfinite(r["g_loss"]) for r in rows)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["amp"] is True


# ------------------------------------------------------------------------------ checkpoints


def test_keep_last_keeps_k_numbered_checkpoints_and_latest(tmp_path: Path) -> None:
    assert _train_cli(tmp_path, "gan", "--steps", "8", "--checkpoint-interval", "2", "--keep-last", "2") == 0
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["latest.pt", "step_000006.pt", "step_000008.pt"]
    assert load_checkpoint(ckpt_dir / "latest.pt")["step"] == 8
    assert load_checkpoint(ckpt_dir / "step_000006.pt")["step"] == 6


def test_resume_is_identical_to_an_uninterrupted_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # 40 images / batch 8 = 5 steps per epoch: stopping at 3 resumes in the middle of epoch 0.
    # cgan: the discriminator has dropout, so RNG state matters; EMA is on to cover it too.
    common = ["--n-samples", "40", "--ema", "0.9", "--log-every", "1", "--checkpoint-interval", "100"]
    assert _train_cli(tmp_path, "cgan", *common, "--steps", "8", run="straight") == 0
    assert _train_cli(tmp_path, "cgan", *common, "--steps", "3", run="part") == 0
    part_latest = tmp_path / "part" / "checkpoints" / "latest.pt"
    assert load_checkpoint(part_latest)["step"] == 3
    capsys.readouterr()
    assert main(["train", "--resume", str(part_latest), "--steps", "8"]) == 0
    assert f"run directory: {(tmp_path / 'part').resolve()}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part", "straight"]  # no new run dir

    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    resumed = load_checkpoint(part_latest)
    assert resumed["step"] == straight["step"] == 8
    assert resumed["epoch"] == 1
    for role in ("generator", "discriminator"):
        assert _max_weight_diff(straight["networks"][role]["state_dict"],
                                resumed["networks"][role]["state_dict"]) <= 1e-6
    assert _max_weight_diff(straight["ema_generator"], resumed["ema_generator"]) <= 1e-6
    # The metrics log continues from the saved step, without duplicates.
    assert [r["step"] for r in _metrics(tmp_path / "part")] == list(range(1, 9))
    assert [r["d_loss"] for r in _metrics(tmp_path / "part")] == pytest.approx(
        [r["d_loss"] for r in _metrics(tmp_path / "straight")], abs=1e-6)


def test_resume_refuses_changed_model_options(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _train_cli(tmp_path, "gan", "--steps", "2") == 0
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    capsys.readouterr()
    assert main(["train", "--resume", str(latest), "--latent-dim", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot change latent_dim" in err[0]
    # The Python API: a config whose defaults differ from the checkpoint's is refused, not rewritten.
    with pytest.raises(InvalidInputError, match="latent_dim=100"):
        train(TrainConfig(kind="gan", dataset="digits", resume=str(latest), image_size=16, n_samples=64,
                          batch_size=8, device="cpu"))


@pytest.mark.parametrize("content", ["truncated", "foreign", "text"])
def test_corrupt_resume_file_exits_2_with_one_error_line(content: str, tmp_path: Path,
                                                         tiny_checkpoint, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.pt"
    if content == "truncated":
        data = tiny_checkpoint("gan").read_bytes()
        bad.write_bytes(data[: len(data) // 3])
    elif content == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, bad)
    else:
        bad.write_text("not a checkpoint\n")
    capsys.readouterr()  # drop the fixture's progress output
    assert main(["train", "--resume", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: ") and str(bad) in err[0]


def test_ema_weights_are_saved_and_preferred(tiny_checkpoint) -> None:
    ckpt = load_checkpoint(tiny_checkpoint("gan", ema=0.5))
    ema, raw = ckpt["ema_generator"], ckpt["networks"]["generator"]["state_dict"]
    assert ema is not None and set(ema) == set(raw)
    assert _max_weight_diff(ema, raw) > 0  # 3 steps at decay 0.5 lag behind the raw weights
    exported = build_from_checkpoint(ckpt).state_dict()
    assert _max_weight_diff(exported, ema) == 0


def _batch_norm_buffers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_ema_recalibration_averages_the_averaged_networks_own_batch_statistics() -> None:
    from ganport.trainer.ema import EMA
    from ganport.trainer.models import CondMLPGenerator

    torch.manual_seed(0)
    net = CondMLPGenerator(8, 3, [1, 6, 6], hidden=(16, 32, 24))
    ema = EMA(net, 0.5)
    with torch.no_grad():  # the averaged weights now differ from the network the stats came from
        for param in net.parameters():
            param.add_(torch.randn_like(param))
    ema.update(net)
    weights = {k: v.clone() for k, v in ema.module.named_parameters()}
    norms = [m for m in ema.module.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 2
    seen: dict[int, list[torch.Tensor]] = {id(m): [] for m in norms}
    hooks = [m.register_forward_pre_hook(lambda m, args: seen[id(m)].append(args[0].detach().clone()))
             for m in norms]
    gen = torch.Generator().manual_seed(1)
    used = ema.recalibrate(lambda n: (torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)),
                           batch_size=50, values=1000)
    for hook in hooks:
        hook.remove()
    assert used == 1000  # 20 passes of 50: one value per image and feature
    for m in norms:
        batches = seen[id(m)]
        assert len(batches) == 20
        # The plain average over the passes of each pass's mean and unbiased variance.
        torch.testing.assert_close(m.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
        torch.testing.assert_close(m.running_var, torch.stack([b.var(0) for b in batches]).mean(0))
        assert m.momentum == 0.1  # restored
    assert not ema.module.training
    assert all(torch.equal(p, weights[k]) for k, p in ema.module.named_parameters())  # weights untouched


def test_ema_recalibration_counts_positions_of_convolutional_layers() -> None:
    from ganport.trainer.ema import EMA
    from ganport.trainer.models import CondDCGenerator, MLPDiscriminator

    ema = EMA(CondDCGenerator(8, 3, [1, 16, 16], start_channels=8), 0.9)
    # The smallest BatchNorm2d map is 8x8 here: 64 values per image, so 1000 values take 16 images.
    used = ema.recalibrate(lambda n: (torch.randn(n, 8), torch.randint(0, 3, (n,))), batch_size=4, values=1000)
    assert used == 16
    assert EMA(MLPDiscriminator([1, 6, 6]), 0.9).recalibrate(lambda n: (torch.randn(n, 1, 6, 6),)) == 0


def test_only_the_last_checkpoint_re_estimates_the_ema_batch_statistics(tmp_path: Path) -> None:
    assert _train_cli(tmp_path, "cgan", "--ema", "0.9", "--steps", "4", "--checkpoint-interval", "2") == 0
    ckpt_dir = tmp_path / "run" / "checkpoints"
    middle, last = load_checkpoint(ckpt_dir / "step_000002.pt"), load_checkpoint(ckpt_dir / "latest.pt")
    assert last["step"] == 4
    copied = _batch_norm_buffers(middle["ema_generator"])
    assert copied and all(torch.equal(v, middle["networks"]["generator"]["state_dict"][k]) for k, v in copied.items())
    own = _batch_norm_buffers(last["ema_generator"])
    trained = _batch_norm_buffers(last["networks"]["generator"]["state_dict"])
    assert _max_weight_diff(own, trained) > 0
    # They are the averaged generator's: fresh latents through it in training mode agree with
    # them far better than with the trained network's statistics.
    g = build_from_checkpoint(last).train()
    batch = {}
    for name, m in g.named_modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.register_forward_pre_hook(lambda m, args, name=name: batch.setdefault(name, args[0].detach()))
    with torch.no_grad():
        g(torch.randn(20_000, 8), torch.randint(0, 10, (20_000,)))
    for name, x in batch.items():
        own_err = (x.mean(0) - own[f"{name}.running_mean"]).abs().max()
        trained_err = (x.mean(0) - trained[f"{name}.running_mean"]).abs().max()
        assert own_err < 0.2 * trained_err, (name, own_err, trained_err)


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_checkpoint_fixture(kind: str, tiny_checkpoint) -> None:
    path = tiny_checkpoint(kind)
    assert path == tiny_checkpoint(kind)  # cached for the session
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == kind and ckpt["step"] == 3
    assert ckpt["data"]["dataset"] == "digits" and ckpt["data"]["image_shape"] == [1, 16, 16]


# ------------------------------------------------------------------------------ processes


def _start_training(tmp_path: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ganport", "train", "gan", "--dataset", "digits", *TINY,
           "--steps", "1000000", "--log-every", "1", "--sample-interval", "1000000",
           "--out-dir", str(tmp_path), "--run-name", "run", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=_subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_steps(proc: subprocess.Popen, run_dir: Path, steps: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    metrics = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"training did not reach {steps} steps in {timeout} s")


def test_sigkill_mid_run_leaves_a_loadable_latest_checkpoint(tmp_path: Path) -> None:
    # A checkpoint every step: the kill lands while checkpoints are being written.
    proc = _start_training(tmp_path, "--checkpoint-interval", "1", "--keep-last", "2")
    try:
        _wait_for_steps(proc, tmp_path / "run", 5)
        time.sleep(0.3)
        assert proc.poll() is None  # still training when killed
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    ckpt = load_checkpoint(latest)
    assert ckpt["step"] >= 5
    build_from_checkpoint(ckpt)
    # ... and training continues from it.
    assert main(["train", "--resume", str(latest), "--steps", str(ckpt["step"] + 2)]) == 0
    assert load_checkpoint(latest)["step"] == ckpt["step"] + 2


def test_sigint_saves_latest_and_exits_130(tmp_path: Path) -> None:
    proc = _start_training(tmp_path, "--checkpoint-interval", "1000000")
    try:
        _wait_for_steps(proc, tmp_path / "run", 3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted by SIGINT" in out
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["step"] >= 3
    assert ckpt["step"] == _metrics(tmp_path / "run")[-1]["step"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_ddp_with_gloo(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "ganport", "train", "cgan", "--dataset", "digits", *TINY,
           "--steps", "6", "--checkpoint-interval", "3", "--log-every", "3",
           "--out-dir", str(tmp_path), "--run-name", "ddp"]
    proc = subprocess.run(cmd, cwd=REPO, env=_subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 reports, rank 1 stays quiet
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "latest.pt")
    # 64 images / (batch 8 x 2 processes) = 4 steps per epoch (8 single-process).
    assert ckpt["batches_per_epoch"] == 4
    assert ckpt["step"] == 6 and ckpt["epoch"] == 1
    rows = _metrics(tmp_path / "ddp")
    assert [r["step"] for r in rows] == [3, 6]
    assert all(math.isfinite(r["d_loss"]) for r in rows)
    assert sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").glob("*.pt")) == [
        "latest.pt", "step_000003.pt", "step_000006.pt"]


# ------------------------------------------------------------------------------ user errors


def test_unknown_kind_and_dataset_list_the_choices(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _train_cli(tmp_path, "vae") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown kind 'vae'" in err[0] and "gan, dcgan, cgan, cdcgan, aae" in err[0]
    assert _train_cli(tmp_path, "gan", dataset="imagenet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "imagenet" in err[0] and "glyphs" in err[0] and "digits" in err[0]
    assert main(["train", "gan"]) == 2
    assert "missing --dataset" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["gan", "--arch", "simpsons"], "convolutional kinds only"),
    (["cgan", "--ema", "1.5"], "ema=1.5"),
    (["gan", "--loss", "wasserstein"], "bce, minimax, lsgan, hinge"),
    (["gan", "--batch-size", "0"], "batch_size=0"),
    (["gan", "--dataset-option", "oops"], "KEY=VALUE"),
])
def test_bad_options_exit_2(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["train", *args, "--dataset", "digits", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not any(tmp_path.iterdir())  # nothing written for a refused run


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _train_cli(tmp_path, "gan", "--steps", "1", "--device", "cuda") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]


def test_resume_past_the_end_is_refused(tiny_checkpoint, capsys: pytest.CaptureFixture) -> None:
    latest = tiny_checkpoint("gan")
    capsys.readouterr()
    assert main(["train", "--resume", str(latest), "--steps", "3"]) == 2
    assert "already at step 3" in capsys.readouterr().err


def test_conditional_kind_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _train_cli(tmp_path, "cgan", "--steps", "1", dataset="fractal-dream") == 2
    assert "labelled" in capsys.readouterr().err


def test_existing_run_name_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _train_cli(tmp_path, "gan", "--steps", "1") == 0
    assert _train_cli(tmp_path, "gan", "--steps", "1") == 2
    assert "already holds a run" in capsys.readouterr().err


def test_datasets_command_lists_built_in_sets(capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"glyphs", "digits", "fractal-dream"} <= set(names)


def test_help_works_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
            "from ganport.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit as e:\n    sys.exit(e.code)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--resume" in proc.stdout and "--dataset-option" in proc.stdout


def test_train_flags_are_made_from_the_config_fields(capsys: pytest.CaptureFixture) -> None:
    import dataclasses

    from ganport.trainer.cli import train_options
    from ganport.trainer.config import TrainConfig

    fields = dataclasses.fields(TrainConfig)
    assert all(f.metadata.get("help") for f in fields)  # one documented field per option
    flags = dict(train_options())
    assert len(flags) == len(fields)
    # Every flag `ganport train` had before the flags were generated is still there.
    before = ("--dataset --data-root --image-size --n-samples --epochs --steps --batch-size --latent-dim "
              "--loss --lr-g --lr-d --lr-e --beta1 --beta2 --sample-interval --checkpoint-interval "
              "--keep-last --log-every --seed --device --ema --aux-weight --d-conditioning --arch "
              "--num-workers --out-dir --run-name --eval-every --eval-n --threads --amp --no-amp "
              "--tensorboard --no-tensorboard --dataset-option --resume").split()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse's line wrapping undone
    assert all(flag in text for flag in before), [flag for flag in before if flag not in text]
    # Defaults in the help come from the fields themselves.
    defaults = {f.name: f.default for f in fields}
    assert f"--batch-size BATCH_SIZE images per step (per process under torchrun) (default {defaults['batch_size']})" in text
    assert f"--epochs EPOCHS passes over the data set (ignored when steps is set) (default {defaults['epochs']})" in text
    assert "batch_size: images per step" in TrainConfig.__doc__  # and so does the docstring


def _gif_frames(path: Path) -> tuple[list[np.ndarray], list[int]]:
    from PIL import Image, ImageSequence

    with Image.open(path) as gif:
        frames = [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(gif)]
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    return frames, durations


def test_training_ends_with_a_progress_gif_and_animate_redoes_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    assert _train_cli(tmp_path, "cgan", "--steps", "6", "--sample-interval", "2") == 0
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == ["step_000002.png", "step_000004.png", "step_000006.png"]
    frames, durations = _gif_frames(run_dir / "progress.gif")
    assert len(frames) == 3 and durations[-1] > durations[0]  # the last frame is held
    for frame, grid_path in zip(frames, grids):
        grid = np.asarray(Image.open(grid_path).convert("L"))
        np.testing.assert_array_equal(frame[-grid.shape[0]:, :grid.shape[1]], grid)  # exact pixels under the caption
    assert not np.array_equal(frames[0], frames[-1])

    capsys.readouterr()
    out = tmp_path / "two.gif"
    assert main(["animate", str(run_dir), "--out", str(out), "--max-frames", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"animation: {out}"
    two, _ = _gif_frames(out)
    assert len(two) == 2 and np.array_equal(two[0], frames[0]) and np.array_equal(two[1], frames[-1])
    assert not [p for d in (tmp_path, run_dir) for p in d.iterdir() if p.name.endswith(".tmp")]  # atomic, no debris

    assert main(["animate", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: run directory")
    (tmp_path / "empty").mkdir()
    assert main(["animate", str(tmp_path / "empty")]) == 2
    assert "holds no sample grids" in capsys.readouterr().err
    assert main(["animate", str(run_dir), "--max-frames", "1"]) == 2
    assert "max_frames must be an integer >= 2" in capsys.readouterr().err


# ------------------------------------------------------------------------------ conditioning of D


def test_aux_weight_trains_through_the_cli_and_records_the_head(tmp_path: Path) -> None:
    assert _train_cli(tmp_path, "cgan", "--steps", "4", "--log-every", "2", "--aux-weight", "0.5",
                      "--d-conditioning", "projection") == 0
    run_dir = tmp_path / "run"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["aux_weight"] == 0.5 and config["d_conditioning"] == "projection"
    for row in _metrics(run_dir):
        for key in ("d_loss", "g_loss", "d_aux_loss", "g_aux_loss", "d_class_acc"):
            assert math.isfinite(row[key])
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    entry = ckpt["networks"]["discriminator"]
    assert entry["init_args"]["aux_classes"] == 10 and entry["init_args"]["projection"] is True
    d = build_from_checkpoint(ckpt, "discriminator")
    with torch.no_grad():
        logits, classes = d(torch.zeros(3, 1, 16, 16), torch.tensor([0, 1, 2]), with_classes=True)
    assert logits.shape == (3, 1) and classes.shape == (3, 10)
    # Resume keeps the head (its optimizer state and weights must fit).
    assert main(["train", "--resume", str(run_dir / "checkpoints" / "latest.pt"), "--steps", "6"]) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 6


@pytest.mark.parametrize("kind, aux, expected", [
    ("cgan", [], 0.5), ("cdcgan", [], 0.5), ("cgan", ["--aux-weight", "0"], 0.0),
    ("cdcgan", ["--aux-weight", "0.25"], 0.25), ("gan", [], 0.0)])
def test_aux_weight_defaults_per_kind_and_zero_is_the_classic_cgan(
        kind: str, aux: list[str], expected: float, tmp_path: Path) -> None:
    assert _train_cli(tmp_path, kind, "--steps", "2", "--log-every", "1", *aux) == 0
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "config.json").read_text())["aux_weight"] == expected
    d_args = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["networks"]["discriminator"]["init_args"]
    assert d_args["aux_classes"] == (10 if expected else 0)
    assert ("d_aux_loss" in _metrics(run_dir)[0]) is bool(expected)


def test_checkpoint_from_before_aux_weight_resumes_as_classic_cgan(tmp_path: Path) -> None:
    # The classic cGAN as trained before these options existed: no head, label concatenated.
    assert _train_cli(tmp_path, "cgan", "--steps", "2", "--aux-weight", "0", "--d-conditioning", "concat") == 0
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    raw = torch.load(latest, weights_only=True)
    for key in ("aux_weight", "d_conditioning"):
        del raw["config"][key]
    for key in ("aux_classes", "projection"):
        del raw["networks"]["discriminator"]["init_args"][key]
    torch.save(raw, latest)
    assert main(["train", "--resume", str(latest), "--steps", "4"]) == 0
    resumed = load_checkpoint(latest)
    assert resumed["step"] == 4 and resumed["config"]["aux_weight"] == 0.0
    assert resumed["config"]["d_conditioning"] == "concat"


def test_auxiliary_loss_teaches_the_discriminator_to_classify(tmp_path: Path) -> None:
    # 300 steps on digits at 16 px: D's class head, never fed the label, must name the digit of
    # held-out real images far above chance (10%).
    from ganport.trainer.datasets import load_dataset

    assert main(["train", "cgan", "--dataset", "digits", "--image-size", "16", "--batch-size", "32",
                 "--latent-dim", "16", "--steps", "300", "--sample-interval", "1000",
                 "--checkpoint-interval", "1000", "--device", "cpu", "--aux-weight", "1",
                 "--out-dir", str(tmp_path), "--run-name", "run"]) == 0
    d = build_from_checkpoint(load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt"), "discriminator")
    test = load_dataset("digits", image_size=16, split="test")
    images, labels = torch.from_numpy(test.images), torch.from_numpy(test.labels)
    with torch.no_grad():
        _, classes = d(images, torch.zeros_like(labels), with_classes=True)
    accuracy = (classes.argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.6, accuracy


@pytest.mark.parametrize("args, message", [
    (["cgan", "--aux-weight", "-1"], "aux_weight=-1.0"),
    (["gan", "--aux-weight", "1"], "conditional kinds only"),
    (["cgan", "--d-conditioning", "hinge"], "concat, projection"),
    (["dcgan", "--d-conditioning", "projection"], "conditional kinds only"),
    (["cdcgan", "--conditional-bn"], "cgan only"),
])
def test_bad_conditioning_options_exit_2(args: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["train", *args, "--dataset", "digits", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_periodic_evaluation_is_logged_with_the_losses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--eval-every N puts the evaluation figures into the metrics row of that step."""
    cache = tmp_path / "classifiers"
    monkeypatch.setenv("GANPORT_CACHE_DIR", str(cache))
    assert _train_cli(tmp_path, "cgan", "--steps", "8", "--log-every", "3", "--batch-size", "16",
                      "--eval-every", "1", "--eval-n", "40", "--threads", "1") == 0
    rows = _metrics(tmp_path / "run")
    evaluated = [row for row in rows if "eval_cond_acc" in row]
    # 64 images / batch 16 = 4 steps per epoch: evaluations at steps 4 and 8, beside the losses.
    assert [row["step"] for row in evaluated] == [4, 8]
    for row in evaluated:
        assert 0.0 <= row["eval_cond_acc"] <= 1.0
        assert math.isfinite(row["eval_fd"]) and row["eval_fd"] >= 0
        assert math.isfinite(row["d_loss"]) and math.isfinite(row["g_loss"])
    assert any(cache.iterdir()), "the reference classifier was not cached"


def test_discriminator_dropout_option_validates_and_old_configs_keep_theirs(tmp_path: Path) -> None:
    from ganport.trainer.config import DEFAULT_D_DROPOUT

    assert TrainConfig(kind="cgan", dataset="glyphs").validate().d_dropout == DEFAULT_D_DROPOUT["cgan"]
    for bad in (-0.1, 1.0, "x", True):
        with pytest.raises(InvalidInputError, match="d_dropout"):
            TrainConfig(kind="cgan", dataset="glyphs", d_dropout=bad).validate()
    # A config written before the option existed rebuilt its D with the kind's dropout of then.
    assert TrainConfig.from_dict({"kind": "cgan", "dataset": "glyphs"}).d_dropout == 0.4
    assert _train_cli(tmp_path, "cgan", "--steps", "2", "--d-dropout", "0") == 0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["config"]["d_dropout"] == 0.0
    assert ckpt["networks"]["discriminator"]["init_args"]["dropout"] == 0.0
