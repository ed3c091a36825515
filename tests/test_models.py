"""Networks, losses and checkpoint files: shapes, self-description, round trips, bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ganport.errors import CheckpointError, InvalidInputError
from ganport.trainer.checkpoint import (build_from_checkpoint, capture_rng_state, file_sha256,
                                        load_checkpoint, network_entry, restore_rng_state,
                                        save_checkpoint)
from ganport.trainer.losses import LOSSES, aae_regularised_loss, discriminator_loss, get_loss
from ganport.trainer.models import CONDITIONAL_KINDS, NETWORKS, build_networks, rebuild_network

KINDS = ("gan", "dcgan", "cgan", "cdcgan", "aae")
LATENT = 16
N_CLASSES = 10


def _run(nets: dict[str, torch.nn.Module], kind: str, img_shape: list[int], n: int = 3):
    """Forward every network once in eval mode; returns (images, d_logits, codes or None)."""
    torch.manual_seed(0)
    z = torch.randn(n, LATENT)
    labels = torch.arange(n) % N_CLASSES
    conditional = kind in CONDITIONAL_KINDS
    with torch.no_grad():
        for net in nets.values():
            net.eval()
        images = nets["generator"](z, labels) if conditional else nets["generator"](z)
        logits = nets["discriminator"](images, labels) if conditional else nets["discriminator"](images)
        codes = nets["encoder"](images) if "encoder" in nets else None
    return images, logits, codes


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_per_kind_and_size(kind: str, size: int) -> None:
    channels = 3 if size == 32 else 1  # 32 px as CIFAR-like RGB, the others grayscale
    img_shape = [channels, size, size]
    nets = build_networks(kind, img_shape, N_CLASSES, LATENT)
    assert set(nets) == ({"generator", "discriminator", "encoder"} if kind == "aae"
                         else {"generator", "discriminator"})
    images, logits, codes = _run(nets, kind, img_shape)
    assert images.shape == (3, *img_shape)
    assert images.abs().max() <= 1.0  # Tanh output range
    assert logits.shape == (3, 1)
    if kind == "aae":
        assert codes.shape == (3, LATENT)


def test_simpsons_architecture_128px() -> None:
    nets = build_networks("dcgan", [3, 128, 128], 0, LATENT, arch="simpsons")
    gen = nets["generator"]
    assert gen.init_args["kernel_size"] == 9 and gen.init_args["start_channels"] == 512
    first_linear = gen.model[0]
    assert first_linear.out_features == 512 * 8 * 8  # Linear to 512x8x8, as in the report
    images, logits, _ = _run(nets, "dcgan", [3, 128, 128], n=2)
    assert images.shape == (2, 3, 128, 128)
    assert logits.shape == (2, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_init_args_rebuild_gives_identical_outputs(kind: str) -> None:
    img_shape = [1, 28, 28]
    nets = build_networks(kind, img_shape, N_CLASSES, LATENT)
    rebuilt = {}
    for role, net in nets.items():
        entry = network_entry(net)
        json.dumps(entry["init_args"])  # constructor args must be plain JSON
        assert entry["class"] in NETWORKS
        copy = rebuild_network(entry["class"], entry["init_args"])
        copy.load_state_dict(entry["state_dict"])
        rebuilt[role] = copy
    original = _run(nets, kind, img_shape)
    again = _run(rebuilt, kind, img_shape)
    for a, b in zip(original, again):
        if a is not None:
            assert torch.equal(a, b)


def test_build_networks_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="unknown model kind"):
        build_networks("vae", [1, 28, 28], 10, 8)
    with pytest.raises(InvalidInputError, match="labelled"):
        build_networks("cgan", [1, 28, 28], 0, 8)
    with pytest.raises(InvalidInputError, match="not square"):
        build_networks("dcgan", [1, 28, 32], 0, 8)
    with pytest.raises(InvalidInputError, match="unknown architecture"):
        build_networks("dcgan", [1, 32, 32], 0, 8, arch="huge")
    with pytest.raises(InvalidInputError, match="unknown network class"):
        rebuild_network("os.system", {})


def _payload(kind: str = "cdcgan") -> tuple[dict, dict[str, torch.nn.Module]]:
    nets = build_networks(kind, [1, 16, 16], N_CLASSES, LATENT)
    payload = {"kind": kind, "networks": {r: network_entry(n) for r, n in nets.items()},
               "ema_generator": None, "optimizers": {}, "config": {"kind": kind, "dataset": "digits"},
               "step": 7, "epoch": 0, "rng": capture_rng_state(),
               "data": {"name": "digits", "class_names": [str(i) for i in range(N_CLASSES)],
                        "image_shape": [1, 16, 16], "value_range": [-1.0, 1.0], "dataset": "digits"}}
    return payload, nets


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    payload, nets = _payload()
    path = save_checkpoint(tmp_path / "ck.pt", payload)
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away
    raw = torch.load(path, weights_only=True)  # no pickled classes
    assert raw["format"] == "ganport.checkpoint" and raw["format_version"] == 1
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7
    for role in nets:
        rebuilt = build_from_checkpoint(ckpt, role)
        assert not rebuilt.training
        for key, value in nets[role].state_dict().items():
            assert torch.equal(rebuilt.state_dict()[key], value)
    assert len(file_sha256(path)) == 64


def test_build_from_checkpoint_prefers_ema(tmp_path: Path) -> None:
    payload, nets = _payload("gan")
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in nets["generator"].state_dict().items()}
    payload["ema_generator"] = ema
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "ema.pt", payload))
    with_ema = build_from_checkpoint(ckpt, "generator")
    raw = build_from_checkpoint(ckpt, "generator", use_ema=False)
    key = next(iter(ema))
    assert torch.equal(with_ema.state_dict()[key], ema[key])
    assert torch.equal(raw.state_dict()[key], nets["generator"].state_dict()[key])
    with pytest.raises(CheckpointError, match="no encoder"):
        build_from_checkpoint(ckpt, "encoder")


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    first = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    restore_rng_state(state)
    again = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_truncated_foreign_and_missing_files_raise_checkpoint_error(tmp_path: Path) -> None:
    payload, _ = _payload()
    good = save_checkpoint(tmp_path / "good.pt", payload)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # needs unpickling a class
    (tmp_path / "text.pt").write_text("hello")
    newer = dict(payload, format_version=99)
    torch.save({"format": "ganport.checkpoint", **newer}, tmp_path / "newer.pt")
    lacking = {k: v for k, v in payload.items() if k != "networks"}
    torch.save({"format": "ganport.checkpoint", "format_version": 1, **lacking}, tmp_path / "lacking.pt")
    expected = {"truncated.pt": "not a readable", "foreign.pt": "not a ganport checkpoint",
                "pickled_module.pt": "not a readable", "text.pt": "not a readable",
                "newer.pt": "format_version 99", "lacking.pt": "lacks field", "absent.pt": "not found"}
    for name, message in expected.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name)


# ------------------------------------------------------------------------------------- losses


def test_loss_values_at_zero_logits() -> None:
    zero = torch.zeros(4, 1)
    log2 = math.log(2)
    assert LOSSES["bce"].fn(zero, "real").item() == pytest.approx(log2)
    assert LOSSES["bce"].fn(zero, "generator").item() == pytest.approx(log2)
    assert LOSSES["minimax"].fn(zero, "generator").item() == pytest.approx(-log2)
    assert LOSSES["lsgan"].fn(zero, "real").item() == pytest.approx(0.5)
    assert LOSSES["lsgan"].fn(zero, "fake").item() == pytest.approx(0.0)
    d_loss, real, fake = discriminator_loss(LOSSES["bce"], torch.full((4, 1), 3.0), torch.full((4, 1), -3.0))
    assert d_loss.item() == pytest.approx((real.item() + fake.item()) / 2)
    assert d_loss.item() == pytest.approx(math.log1p(math.exp(-3.0)))
    with pytest.raises(InvalidInputError, match="bce, minimax, lsgan"):
        get_loss("wasserstein")


def test_nonsaturating_loss_keeps_generator_gradient_where_minimax_saturates() -> None:
    # D confidently rejects the fakes (logit -8): the minimax generator gradient vanishes,
    # the non-saturating one does not. That is why bce is the default.
    grads = {}
    for name in ("bce", "minimax"):
        logits = torch.full((1, 1), -8.0, requires_grad=True)
        LOSSES[name].fn(logits, "generator").backward()
        grads[name] = abs(logits.grad.item())
    assert grads["bce"] > 0.99
    assert grads["minimax"] < 1e-3


def test_aae_loss_terms() -> None:
    x = torch.zeros(2, 1, 4, 4)
    recon = torch.ones(2, 1, 4, 4)
    z = torch.ones(2, 3)  # mean term 1, second-moment term 0
    total, recon_loss = aae_regularised_loss(x, recon, z)
    assert recon_loss.item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(2.0)
    z2 = torch.full((2, 3), 2.0 ** 0.5)  # z^2 = 2: sqrt(mean((2 - 1)^2)) = 1, mean term 2
    assert aae_regularised_loss(x, x, z2)[0].item() == pytest.approx(3.0)


# ------------------------------------------------------------------------------ conditional D heads


@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("kind", CONDITIONAL_KINDS)
def test_discriminator_class_head_is_recorded_and_rebuilds(kind: str, projection: bool) -> None:
    nets = build_networks(kind, [1, 16, 16], N_CLASSES, LATENT, aux_classifier=True, projection=projection)
    d = nets["discriminator"].eval()
    assert d.init_args["aux_classes"] == N_CLASSES and d.init_args["projection"] is projection
    entry = network_entry(d)
    json.dumps(entry["init_args"])
    copy = rebuild_network(entry["class"], entry["init_args"]).eval()
    copy.load_state_dict(entry["state_dict"])
    torch.manual_seed(0)
    images, labels = torch.rand(5, 1, 16, 16) * 2 - 1, torch.arange(5)
    with torch.no_grad():
        logits, classes = d(images, labels, with_classes=True)
        again = copy(images, labels, with_classes=True)
        plain = d(images, labels)
        # The class head never reads the label it predicts; the adversarial logit does.
        _, other_classes = d(images, labels + 3, with_classes=True)
        other_logits = d(images, labels + 3)
    assert logits.shape == (5, 1) and classes.shape == (5, N_CLASSES)
    assert torch.equal(logits, again[0]) and torch.equal(classes, again[1])
    assert torch.equal(plain, logits)
    assert torch.equal(classes, other_classes)
    assert not torch.equal(logits, other_logits)


def test_discriminator_without_head_refuses_classes_and_keeps_old_layout() -> None:
    d = build_networks("cgan", [1, 28, 28], N_CLASSES, LATENT)["discriminator"]
    assert d.init_args["aux_classes"] == 0 and d.init_args["projection"] is False
    with pytest.raises(InvalidInputError, match="no auxiliary classifier"):
        d(torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]), with_classes=True)
    # Checkpoints written before the heads existed: init_args without the new keys, and the
    # state dict layout (label_emb + one Sequential ``model``) they hold.
    old_args = {k: v for k, v in d.init_args.items() if k not in ("aux_classes", "projection")}
    old = rebuild_network("MLPDiscriminator", old_args)
    assert set(old.state_dict()) == {"label_emb.weight"} | {
        f"model.{i}.{p}" for i in (0, 2, 5, 8) for p in ("weight", "bias")}
    old.load_state_dict(d.state_dict())


def test_unconditional_kinds_refuse_class_heads() -> None:
    with pytest.raises(InvalidInputError, match="conditional"):
        build_networks("gan", [1, 28, 28], 0, 8, aux_classifier=True)
    with pytest.raises(InvalidInputError, match="conditional"):
        build_networks("dcgan", [1, 32, 32], 0, 8, projection=True)


def test_auxiliary_class_loss_is_cross_entropy() -> None:
    from ganport.trainer.losses import auxiliary_class_loss

    logits = torch.zeros(4, 10)
    assert float(auxiliary_class_loss(logits, torch.arange(4))) == pytest.approx(math.log(10))
    sure = torch.full((4, 10), -20.0)
    sure[torch.arange(4), torch.arange(4)] = 20.0
    assert float(auxiliary_class_loss(sure, torch.arange(4))) < 1e-6


def test_hinge_loss_terms() -> None:
    logits = torch.tensor([[2.0], [0.0], [-3.0]])
    # D: relu(1 - D(x)) on real, relu(1 + D(G(z))) on fake; G: -D(G(z)).
    assert LOSSES["hinge"].fn(logits, "real").item() == pytest.approx((0 + 1 + 4) / 3)
    assert LOSSES["hinge"].fn(logits, "fake").item() == pytest.approx((3 + 1 + 0) / 3)
    assert LOSSES["hinge"].fn(logits, "generator").item() == pytest.approx(1 / 3)


def test_loss_table_and_config_choices_agree() -> None:
    from ganport.trainer.config import LOSS_NAMES

    assert set(LOSS_NAMES) == set(LOSSES)


@pytest.mark.parametrize("kind", ["cgan", "cdcgan"])
def test_spectral_norm_bounds_the_discriminator_layers_and_rebuilds(kind: str) -> None:
    nets = build_networks(kind, [1, 16, 16], N_CLASSES, LATENT, aux_classifier=True, projection=True,
                          spectral_norm=True)
    d = nets["discriminator"]
    assert d.init_args["spectral_norm"] is True
    with torch.no_grad():
        for module in d.modules():  # scale a weight up: spectral norm must undo it
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module is not d.aux_head:
                module.parametrizations.weight.original.mul_(50.0)
    d.train()
    x, y = torch.randn(4, 1, 16, 16), torch.arange(4)
    for _ in range(30):  # power iterations run in training-mode forwards
        d(x, y)
    normalised = [m for m in d.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
                  and hasattr(m, "parametrizations")]
    assert normalised and d.aux_head not in normalised
    for module in normalised:
        weight = module.weight.detach().flatten(1)
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, rel=0.05)
    rebuilt = rebuild_network(type(d).__name__, d.init_args)
    rebuilt.load_state_dict(d.state_dict())
    d.eval(), rebuilt.eval()
    assert torch.equal(d(x, y), rebuilt(x, y))


def test_conditional_batchnorm_generator_uses_the_label_in_every_layer() -> None:
    g = build_networks("cgan", [1, 16, 16], N_CLASSES, LATENT, conditional_bn=True)["generator"]
    assert g.init_args["conditional_bn"] is True
    g.train()
    g(torch.randn(16, LATENT), torch.arange(16) % N_CLASSES)  # BatchNorm statistics
    g.eval()
    z = torch.randn(2, LATENT)
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        before = g(z, labels)
        g.norms[-1].gain.weight[1].mul_(3.0)  # class 1's gain in the last hidden layer only
        after = g(z, labels)
    assert torch.equal(before[0], after[0]) and not torch.allclose(before[1], after[1])
    rebuilt = rebuild_network("CondMLPGenerator", g.init_args)
    rebuilt.load_state_dict(g.state_dict())
    assert torch.equal(rebuilt.eval()(z, labels), after)


@pytest.mark.parametrize("kind", ["gan", "cgan", "dcgan", "cdcgan"])
def test_discriminator_dropout_is_each_kinds_default_or_the_given_value(kind: str) -> None:
    from ganport.trainer.config import DEFAULT_D_DROPOUT

    def dropouts(d: torch.nn.Module) -> list[float]:
        return [m.p for m in d.modules() if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d))]

    default = build_networks(kind, [1, 16, 16], N_CLASSES, LATENT)["discriminator"]
    assert set(dropouts(default)) <= {DEFAULT_D_DROPOUT[kind]}
    assert bool(dropouts(default)) == (DEFAULT_D_DROPOUT[kind] > 0)
    off = build_networks(kind, [1, 16, 16], N_CLASSES, LATENT, d_dropout=0.0)["discriminator"]
    assert all(p == 0.0 for p in dropouts(off))
    some = build_networks(kind, [1, 16, 16], N_CLASSES, LATENT, d_dropout=0.1)["discriminator"]
    assert dropouts(some) and set(dropouts(some)) == {0.1}
    assert some.init_args["dropout"] == 0.1
    rebuilt = rebuild_network(type(some).__name__, some.init_args)
    assert dropouts(rebuilt) == dropouts(some)
