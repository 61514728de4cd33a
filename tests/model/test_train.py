"""Training runs of the tiny preset: checkpoints, logs, exact resume, export."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.cli import build_parser
from model.config import preset
from model.train import (
    denoised_latents,
    encoder_fingerprint,
    evaluate_vae_psnr,
    export_checkpoint,
    foreground_mask,
    latent_foreground,
    latest_checkpoint,
    learning_rate,
    load_trained_vae,
    plot_loss,
    pool_clip,
    spread_blocks,
    torch_generator,
    train_command,
    train_dit,
    train_vae,
    vae_batch,
    vae_loss,
    video_to_tensor,
)

TINY = preset("tiny")
VAE_ARGS = dict(pixel_budget=4096, checkpoint_every=2, eval_clips=2, log=lambda *_: None)
DIT_ARGS = dict(token_budget=160, pool_size=12, checkpoint_every=2, log=lambda *_: None)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    train_vae(TINY, out, steps=4, seed=0, **VAE_ARGS)
    return out


def test_vae_run_writes_checkpoints_log_and_final_weights(vae_run):
    records = [json.loads(line) for line in (vae_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert all(set(r) >= {"step", "loss", "lr", "seconds"} and r["loss"] > 0 for r in records)
    checkpoint = latest_checkpoint(vae_run)
    assert checkpoint.name == "ckpt-0000004"
    assert json.loads((checkpoint / "state.json").read_text())["step"] == 4
    assert {p.name for p in checkpoint.iterdir()} == {"model.safetensors", "optimizer.pt", "state.json"}
    vae, config = load_trained_vae(vae_run)
    assert config == TINY
    # The latent statistics were measured: no longer the identity defaults.
    assert not torch.equal(vae.latent_std, torch.ones_like(vae.latent_std))
    assert "heldout_psnr_db" in json.loads((vae_run / "eval.json").read_text())


def test_interrupted_vae_run_resumes_to_the_same_weights(vae_run, tmp_path):
    out = tmp_path / "resumed"
    train_vae(TINY, out, steps=4, seed=0, stop_after=1, **VAE_ARGS)  # a process that stops after step 0
    assert latest_checkpoint(out).name == "ckpt-0000001"
    assert not (out / "vae.safetensors").exists()
    train_vae(TINY, out, steps=4, seed=0, stop_after=2, **VAE_ARGS)
    train_vae(TINY, out, steps=4, seed=0, **VAE_ARGS)
    whole = load_file(str(vae_run / "vae.safetensors"))
    resumed = load_file(str(out / "vae.safetensors"))
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.allclose(whole[name], resumed[name], atol=1e-6), name
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]


def test_decoder_stage_keeps_the_encoder_and_its_latents(vae_run, dit_run, tmp_path):
    out = tmp_path / "decoder"
    train_vae(TINY, out, steps=4, seed=1, frozen_encoder_from=vae_run, stop_after=2, **VAE_ARGS)
    train_vae(TINY, out, steps=4, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)  # resumed
    before, after = load_file(str(vae_run / "vae.safetensors")), load_file(str(out / "vae.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("decoder."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert encoder_fingerprint(load_trained_vae(out)[0]) == encoder_fingerprint(load_trained_vae(vae_run)[0])
    # The transformer trained on vae_run's latents ships with the tuned decoder, never with another encoder.
    parser = build_parser()
    assert train_command(parser.parse_args(["train", "export", "--out", str(dit_run), "--vae", str(out),
                                            "--to", str(tmp_path / "model")])) == 0
    shipped = load_file(str(tmp_path / "model" / "vae.safetensors"))
    assert all(torch.equal(shipped[k], after[k]) for k in after)
    other = tmp_path / "other-vae"
    train_vae(TINY, other, steps=2, seed=5, **VAE_ARGS)
    with pytest.raises(SystemExit, match="does not encode as"):
        train_command(parser.parse_args(["train", "export", "--out", str(dit_run), "--vae", str(other),
                                         "--to", str(tmp_path / "refused")]))
    with pytest.raises(SystemExit, match="--vae"):
        train_command(parser.parse_args(["train", "decoder", "--preset", "tiny", "--out", str(tmp_path / "d"),
                                         "--steps", "1"]))


def test_a_decoder_stage_may_weight_its_loss_otherwise_but_not_change_the_network(vae_run, dit_run, tmp_path):
    weighted = dataclasses.replace(TINY, vae=dataclasses.replace(TINY.vae, foreground_weight=12.0, latent_penalty=0.0))
    out = tmp_path / "decoder"
    train_vae(weighted, out, steps=2, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)
    # The transformer trained on vae_run's latents ships with it: export compares networks, not losses.
    assert export_checkpoint(dit_run, out, tmp_path / "model") == 4
    shipped = load_file(str(tmp_path / "model" / "vae.safetensors"))
    assert all(torch.equal(shipped[k], v) for k, v in load_file(str(out / "vae.safetensors")).items())
    wider = dataclasses.replace(TINY, vae=dataclasses.replace(TINY.vae, base_channels=16))
    with pytest.raises(ValueError, match="another VAEConfig"):
        train_vae(wider, tmp_path / "wider", steps=2, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)


def test_a_decoder_stage_with_a_discriminator_trains_both_and_resumes_exactly(vae_run, tmp_path):
    adversarial = dataclasses.replace(TINY, vae=dataclasses.replace(TINY.vae, adversarial_weight=0.5))
    with pytest.raises(ValueError, match="adversarial_weight is for the decoder stage"):
        train_vae(adversarial, tmp_path / "refused", steps=2, seed=1, **VAE_ARGS)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_vae(adversarial, whole, steps=4, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)
    train_vae(adversarial, resumed, steps=4, seed=1, frozen_encoder_from=vae_run, stop_after=2, **VAE_ARGS)
    assert (latest_checkpoint(resumed) / "discriminator.safetensors").is_file()
    train_vae(adversarial, resumed, steps=4, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)
    a, b = load_file(str(whole / "vae.safetensors")), load_file(str(resumed / "vae.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    da = load_file(str(latest_checkpoint(whole) / "discriminator.safetensors"))
    db = load_file(str(latest_checkpoint(resumed) / "discriminator.safetensors"))
    assert all(torch.allclose(da[k], db[k], atol=1e-6) for k in da)
    records = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines()]
    assert all(r["adversarial_scale"] > 0 and r["discriminator"] > 0 for r in records)
    # The encoder stays frozen, and the adversarial term changes what the decoder learns.
    plain = tmp_path / "plain"
    train_vae(TINY, plain, steps=4, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)
    p = load_file(str(plain / "vae.safetensors"))
    before = load_file(str(vae_run / "vae.safetensors"))
    assert all(torch.equal(before[k], a[k]) for k in before if not k.startswith("decoder."))
    assert any(not torch.allclose(p[k], a[k], atol=1e-6) for k in p if k.startswith("decoder."))


def test_a_decoder_stage_can_learn_to_draw_a_transformers_estimates(vae_run, dit_run, tmp_path):
    from model.pipeline import TextToVideo

    model = dit_run / "export"  # its transformer learned vae_run's latents
    pipeline = TextToVideo.from_pretrained(model)
    x, captions = vae_batch(3, 0, TINY, 4096, None, with_captions=True)
    assert len(captions) == len(x) and all(isinstance(c, str) and c for c in captions)
    z = pipeline.vae.encode(x)
    estimate = denoised_latents(pipeline, z, captions, torch_generator(0))
    assert estimate.shape == z.shape and not torch.allclose(estimate, z)
    assert torch.equal(estimate, denoised_latents(pipeline, z, captions, torch_generator(0)))

    out, plain = tmp_path / "decoder", tmp_path / "plain"
    train_vae(TINY, out, steps=4, seed=1, frozen_encoder_from=vae_run, denoised_by=model, stop_after=2, **VAE_ARGS)
    with pytest.raises(ValueError, match="denoised_by"):  # a run resumes only as it started
        train_vae(TINY, out, steps=4, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)
    train_vae(TINY, out, steps=4, seed=1, frozen_encoder_from=vae_run, denoised_by=model, **VAE_ARGS)
    train_vae(TINY, plain, steps=4, seed=1, frozen_encoder_from=vae_run, **VAE_ARGS)
    before, after = load_file(str(vae_run / "vae.safetensors")), load_file(str(out / "vae.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("decoder."))
    # The same clips and seed: only what the decoder was shown differs.
    plain_weights = load_file(str(plain / "vae.safetensors"))
    assert any(not torch.equal(plain_weights[k], after[k]) for k in after if k.startswith("decoder."))

    other = tmp_path / "other-vae"
    train_vae(TINY, other, steps=2, seed=5, **VAE_ARGS)
    with pytest.raises(ValueError, match="another encoder"):
        train_vae(TINY, tmp_path / "refused", steps=2, seed=1, frozen_encoder_from=other, denoised_by=model, **VAE_ARGS)
    with pytest.raises(ValueError, match="decoder stage"):
        train_vae(TINY, tmp_path / "refused-vae", steps=2, seed=1, denoised_by=model, **VAE_ARGS)
    parser = build_parser()
    with pytest.raises(SystemExit, match="decoder stage"):
        train_command(parser.parse_args(["train", "dit", "--preset", "tiny", "--vae", str(vae_run), "--out",
                                         str(tmp_path / "d"), "--steps", "1", "--denoised-by", str(model)]))
    with pytest.raises(SystemExit, match="no model"):
        train_command(parser.parse_args(["train", "decoder", "--preset", "tiny", "--vae", str(vae_run), "--out",
                                         str(tmp_path / "d"), "--steps", "1", "--denoised-by", str(tmp_path / "none")]))


def test_a_vae_run_starts_with_stills_and_resumes_only_with_its_data_settings(tmp_path):
    out = tmp_path / "run"
    train_vae(TINY, out, steps=6, seed=0, stop_after=3, stills_share=1 / 3, **VAE_ARGS)
    frames = [json.loads(line)["shape"][2] for line in (out / "log.jsonl").read_text().splitlines()]
    assert frames[:2] == [1, 1]  # the first third of 6 steps
    assert vae_batch(1, 0, TINY, 4096, None, stills_until=2).shape[2] == 1
    assert any(vae_batch(step, 0, TINY, 4096, None).shape[2] > 1 for step in range(8))
    with pytest.raises(ValueError, match="stills_until=2"):
        train_vae(TINY, out, steps=6, seed=0, stills_share=0.0, **VAE_ARGS)
    with pytest.raises(ValueError, match="pixel_budget=4096"):
        train_vae(TINY, out, steps=6, seed=0, **{**VAE_ARGS, "pixel_budget": 8192})
    with pytest.raises(ValueError, match="stills_share"):
        train_vae(TINY, tmp_path / "other", steps=6, seed=0, stills_share=1.5, **VAE_ARGS)
    with pytest.raises(ValueError, match=r"frame_weights=\[0.5, 0.3, 0.2\]"):
        train_vae(TINY, out, steps=6, seed=0, stills_share=1 / 3, frame_weights=(0.0, 0.5, 0.5), **VAE_ARGS)
    # A checkpoint written before frame_weights was recorded drew its frames with the default.
    state_path = latest_checkpoint(out) / "state.json"
    state = json.loads(state_path.read_text())
    del state["frame_weights"]
    state_path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"frame_weights=\[0.5, 0.3, 0.2\]"):
        train_vae(TINY, out, steps=6, seed=0, stills_share=1 / 3, frame_weights=(0.0, 0.5, 0.5), **VAE_ARGS)
    train_vae(TINY, out, steps=6, seed=0, stills_share=1 / 3, **VAE_ARGS)
    assert json.loads((latest_checkpoint(out) / "state.json").read_text())["step"] == 6
    for weights in ((float("nan"), 0.5, 0.5), (-0.5, 1.0, 0.5)):
        with pytest.raises(ValueError, match="add up to 1"):
            train_vae(TINY, tmp_path / "refused", steps=6, seed=0, frame_weights=weights, **VAE_ARGS)
    assert not (tmp_path / "refused").exists()


def test_a_vae_or_decoder_run_can_show_clips_only(vae_run, tmp_path):
    clips_only = (0.0, 0.5, 0.5)
    assert all(vae_batch(step, 0, TINY, 4096, None, frame_weights=clips_only).shape[2] > 1 for step in range(12))
    assert any(vae_batch(step, 0, TINY, 4096, None).shape[2] == 1 for step in range(12))
    for stage in ("vae", "decoder"):
        out = tmp_path / stage
        args = build_parser().parse_args(["train", stage, "--preset", "tiny", "--vae", str(vae_run), "--out", str(out),
                                          "--steps", "3", "--token-budget", "4096", "--frame-weights", "0,0.5,0.5",
                                          "--threads", "1"])
        assert train_command(args) == 0
        frames = [json.loads(line)["shape"][2] for line in (out / "log.jsonl").read_text().splitlines()]
        assert len(frames) == 3 and min(frames) > 1, stage
        assert json.loads((latest_checkpoint(out) / "state.json").read_text())["frame_weights"] == [0.0, 0.5, 0.5]
    for weights, message in (("0.5,0.5", "add up to 1"), ("1,0,0.5", "add up to 1"), ("-0.5,1,0.5", "add up to 1"),
                             ("a,b,c", "three numbers")):
        with pytest.raises(SystemExit, match=message):
            train_command(build_parser().parse_args(["train", "vae", "--preset", "tiny", "--out", str(tmp_path / "x"),
                                                     "--steps", "2", f"--frame-weights={weights}"]))
    with pytest.raises(SystemExit, match="for Shapes data"):
        train_command(build_parser().parse_args(["train", "vae", "--preset", "tiny", "--out", str(tmp_path / "z"),
                                                 "--steps", "2", "--data", str(tmp_path), "--frame-weights", "0,0.5,0.5"]))
    with pytest.raises(SystemExit, match="vae and decoder stages"):
        train_command(build_parser().parse_args(["train", "dit", "--preset", "tiny", "--vae", str(vae_run),
                                                 "--out", str(tmp_path / "y"), "--steps", "2", "--frame-weights", "0,0.5,0.5"]))


def test_a_different_seed_sees_different_data():
    a, b = vae_batch(5, 0, TINY, 4096, None), vae_batch(5, 1, TINY, 4096, None)
    assert a.shape != b.shape or not torch.equal(a, b)
    assert torch.equal(a, vae_batch(5, 0, TINY, 4096, None))


def test_the_foreground_mask_covers_the_object_and_its_edge():
    from model.data.shapes import Scene, ShapeObject, render

    scene = Scene("navy", (ShapeObject(color="yellow", shape="square", size="medium", motion="right"),))
    video = render(scene, 64, 64, 9)
    mask = foreground_mask(video_to_tensor(video)[None])[0, 0]  # (T, H, W)
    drawn = torch.from_numpy((video != video[0, 0, 0]).any(axis=-1))
    assert mask.shape == drawn.shape
    assert bool(mask[drawn].all())  # every object pixel
    ring = mask.sum() - drawn.sum()
    assert 0 < ring <= 4 * 21 * 9  # plus a one-pixel ring around a 19-20 pixel square, no more
    assert mask[:, 0].sum() == mask[:, :, 0].sum() == 0  # nothing of the background


def test_the_latent_foreground_marks_the_latent_cells_that_see_the_object():
    from model.data.shapes import Scene, ShapeObject, render

    config = preset("shapes-s2").vae  # 4x in time and space
    scene = Scene("black", (ShapeObject(color="red", shape="circle", size="medium", motion="right"),))
    x = video_to_tensor(render(scene, 64, 48, 17))[None]
    cells = latent_foreground(x, config)
    assert cells.shape == (1, 5, 12, 16)  # (1, 1 + 16 / 4 latent frames, 48 / 4, 64 / 4)
    pixels = foreground_mask(x)[0, 0]  # (17, 48, 64)
    # Latent frame 0 is frame 0 alone; latent frame k covers frames 4k - 3 .. 4k.
    for k, frames in enumerate([pixels[:1], *pixels[1:].split(4)]):
        seen = frames.amax(0).view(12, 4, 16, 4).amax((1, 3))
        assert torch.equal(cells[0, k], seen)
    assert 0 < cells.mean() < 0.5
    # Moving right: the first latent frame's object is left of the last one's.
    columns = torch.arange(16.0)
    first, last = ((cells[0, k].sum(0) * columns).sum() / cells[0, k].sum() for k in (0, 4))
    assert last > first + 4


def test_a_dit_runs_foreground_weight_weighs_its_loss_toward_the_object(vae_run, tmp_path):
    from model.train import LatentPool
    from model.vae import CausalVAE

    weighted = dataclasses.replace(TINY, flow=dataclasses.replace(TINY.flow, foreground_weight=4.0))
    vae = CausalVAE(TINY.vae).eval()
    plain_pool, weighted_pool = (LatentPool(vae, config, 0, 4, None, "cpu") for config in (TINY, weighted))
    latent, weight, _ = weighted_pool.get(1, 0)
    plain_latent, no_weight, _ = plain_pool.get(1, 0)
    assert no_weight is None and torch.equal(latent, plain_latent)
    assert weight.shape == (1, *latent.shape[1:])
    assert set(weight.unique().tolist()) == {1.0, 5.0}
    # A run with it trains, and its log says so by a loss unlike the unweighted run's on the same data.
    out = tmp_path / "weighted"
    train_dit(weighted, vae_run, out, steps=2, seed=0, **DIT_ARGS)
    plain_out = tmp_path / "plain"
    train_dit(TINY, vae_run, plain_out, steps=2, seed=0, **DIT_ARGS)
    loss_of = [json.loads((run / "log.jsonl").read_text().splitlines()[0])["loss"] for run in (out, plain_out)]
    assert loss_of[0] > loss_of[1] * 1.05


def test_foreground_weight_raises_the_loss_on_object_pixels():
    import dataclasses

    from model.vae import CausalVAE

    x = vae_batch(3, 0, TINY, 4096, None)
    plain = CausalVAE(TINY.vae).eval()
    weighted = CausalVAE(dataclasses.replace(TINY.vae, foreground_weight=4.0)).eval()
    weighted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        (plain_loss, _, _), (weighted_loss, _, _) = vae_loss(plain, x), vae_loss(weighted, x)
    assert weighted_loss > plain_loss * 1.05


def test_a_dit_run_can_train_the_network_to_predict_the_clean_latent(vae_run, tmp_path):
    from model.pipeline import TextToVideo, VideoSpec

    data = dataclasses.replace(TINY, flow=dataclasses.replace(TINY.flow, prediction="data"))
    runs = {name: tmp_path / name for name in ("data", "velocity")}
    train_dit(data, vae_run, runs["data"], steps=2, seed=0, **DIT_ARGS)
    train_dit(TINY, vae_run, runs["velocity"], steps=2, seed=0, **DIT_ARGS)
    # A fresh network outputs zero: as a velocity the loss is E|noise - x0|^2, as a clean latent E|x0 / t|^2.
    first = {name: json.loads((run / "log.jsonl").read_text().splitlines()[0])["loss"] for name, run in runs.items()}
    assert abs(first["data"] - first["velocity"]) > 0.05 * first["velocity"]
    pipeline = TextToVideo.from_pretrained(runs["data"] / "export")
    assert pipeline.config.flow.prediction == "data"
    (video,) = pipeline.generate([VideoSpec("a red circle moving left", frames=9, steps=2)])
    assert video.shape == (9, 64, 64, 3)


def test_out_directory_of_another_run_is_refused(vae_run):
    with pytest.raises(ValueError, match="different run"):
        train_vae(preset("shapes-s"), vae_run, steps=1, **VAE_ARGS)


def test_learning_rate_warms_up_then_decays():
    rates = [learning_rate(s, 100, 1.0, 10) for s in range(100)]
    assert rates[0] < rates[9] == 1.0
    assert rates[-1] < rates[50] < rates[10]
    assert min(rates[10:]) >= 0.1


def test_psnr_of_an_untrained_autoencoder_is_low(vae_run):
    vae, _ = load_trained_vae(vae_run)
    assert evaluate_vae_psnr(vae, count=2) < 25  # four steps of training cannot reconstruct


@pytest.fixture(scope="module")
def dit_run(vae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("dit")
    train_dit(TINY, vae_run, out, steps=4, seed=0, **DIT_ARGS)
    return out


def test_dit_run_exports_a_loadable_model_with_ema_weights(dit_run, vae_run):
    from model.pipeline import TextToVideo, VideoSpec

    export = dit_run / "export"
    assert {p.name for p in export.iterdir()} == {"config.json", "vae.safetensors", "dit.safetensors"}
    ema = load_file(str(latest_checkpoint(dit_run) / "ema.safetensors"))
    exported = load_file(str(export / "dit.safetensors"))
    assert all(torch.equal(ema[k], exported[k]) for k in ema)
    model = load_file(str(latest_checkpoint(dit_run) / "model.safetensors"))
    assert any(not torch.equal(model[k], ema[k]) for k in model)  # EMA is not the raw weights
    pipeline = TextToVideo.from_pretrained(export)
    assert torch.equal(pipeline.vae.latent_std, load_trained_vae(vae_run)[0].latent_std)
    (video,) = pipeline.generate([VideoSpec("a red circle moving left", frames=9, steps=2)])
    assert video.shape == (9, 64, 64, 3)
    records = [json.loads(line) for line in (dit_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert all(r["clips"] >= 1 for r in records)
    assert sum(r["clips"] for r in records) == json.loads((latest_checkpoint(dit_run) / "state.json").read_text())["data_position"]


def test_interrupted_dit_run_resumes_to_the_same_weights(dit_run, vae_run, tmp_path):
    out = tmp_path / "resumed"
    train_dit(TINY, vae_run, out, steps=4, seed=0, stop_after=1, **DIT_ARGS)
    train_dit(TINY, vae_run, out, steps=4, seed=0, stop_after=2, **DIT_ARGS)
    train_dit(TINY, vae_run, out, steps=4, seed=0, **DIT_ARGS)
    for file_name in ("model.safetensors", "ema.safetensors"):
        whole = load_file(str(latest_checkpoint(dit_run) / file_name))
        resumed = load_file(str(latest_checkpoint(out) / file_name))
        for name in whole:
            assert torch.allclose(whole[name], resumed[name], atol=1e-6), (file_name, name)
    whole_state = json.loads((latest_checkpoint(dit_run) / "state.json").read_text())
    resumed_state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert whole_state["data_position"] == resumed_state["data_position"] >= 4


def test_a_dit_run_resumes_only_with_the_data_settings_it_started_with(vae_run, tmp_path):
    out = tmp_path / "run"
    train_dit(TINY, vae_run, out, steps=4, seed=0, stop_after=1, **DIT_ARGS)
    with pytest.raises(ValueError, match="pool_size=12"):
        train_dit(TINY, vae_run, out, steps=4, seed=0, stop_after=1, **{**DIT_ARGS, "pool_size": 13})
    with pytest.raises(ValueError, match="token_budget=160"):
        train_dit(TINY, vae_run, out, steps=4, seed=0, stop_after=1, **{**DIT_ARGS, "token_budget": 200})
    args = build_parser().parse_args(["train", "dit", "--preset", "tiny", "--vae", str(vae_run), "--out", str(out),
                                      "--steps", "4", "--token-budget", "160", "--pool-size", "12", "--threads", "1"])
    assert train_command(args) == 0
    assert json.loads((latest_checkpoint(out) / "state.json").read_text())["step"] == 4


def test_a_dit_run_can_show_more_squares_and_resumes_only_so(vae_run, tmp_path):
    assert {obj.shape for i in range(40) for obj in pool_clip(TINY, 3, i, (0, 1, 0))[0].objects} == {"square"}
    assert len({obj.shape for i in range(40) for obj in pool_clip(TINY, 3, i)[0].objects}) == 3
    out = tmp_path / "squares"
    train_dit(TINY, vae_run, out, steps=4, seed=3, stop_after=2, shape_shares=(0, 1, 0), **DIT_ARGS)
    assert json.loads((latest_checkpoint(out) / "state.json").read_text())["shape_shares"] == [0, 1, 0]
    with pytest.raises(ValueError, match="was started with shape_shares=\\[0, 1, 0\\]"):
        train_dit(TINY, vae_run, out, steps=4, seed=3, **DIT_ARGS)
    command = ["train", "dit", "--preset", "tiny", "--vae", str(vae_run), "--out", str(out), "--steps", "4",
               "--token-budget", "160", "--pool-size", "12", "--seed", "3"]
    assert train_command(build_parser().parse_args([*command, "--shape-shares", "0,1,0"])) == 0
    assert json.loads((latest_checkpoint(out) / "state.json").read_text())["step"] == 4
    with pytest.raises(SystemExit, match="--shape-shares takes three numbers"):
        train_command(build_parser().parse_args([*command, "--shape-shares", "0,most,0"]))
    with pytest.raises(SystemExit, match="--shape-shares is for the dit stage on Shapes data"):
        train_command(build_parser().parse_args(["train", "vae", "--preset", "tiny", "--out", str(tmp_path / "v"),
                                                 "--steps", "1", "--shape-shares", "0,1,0"]))


def test_a_dit_run_can_stop_after_some_steps_and_go_on_to_another_schedule(vae_run, tmp_path):
    out = tmp_path / "run"
    cli = ["train", "dit", "--preset", "tiny", "--vae", str(vae_run), "--out", str(out), "--token-budget", "160",
           "--pool-size", "12", "--threads", "1"]
    assert train_command(build_parser().parse_args(cli + ["--steps", "6", "--stop-after", "2"])) == 0
    assert json.loads((latest_checkpoint(out) / "state.json").read_text())["step"] == 2
    assert not (out / "export").exists()  # stopped, not finished
    # The run goes on to a shorter schedule: its learning rate now decays to the end at step 4.
    assert train_command(build_parser().parse_args(cli + ["--steps", "4"])) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3] and (out / "export").is_dir()
    assert records[1]["lr"] == pytest.approx(learning_rate(1, 6, 3e-4, warmup=1))
    assert records[3]["lr"] == pytest.approx(learning_rate(3, 4, 3e-4, warmup=1)) != learning_rate(3, 6, 3e-4, warmup=1)
    with pytest.raises(SystemExit, match="--stop-after"):
        train_command(build_parser().parse_args(cli + ["--steps", "4", "--stop-after", "0"]))


def test_train_command_runs_from_the_cli_arguments(vae_run, tmp_path):
    out = tmp_path / "cli"
    args = build_parser().parse_args(
        ["train", "vae", "--preset", "tiny", "--out", str(out), "--steps", "1", "--token-budget", "4096"]
    )
    assert train_command(args) == 0
    assert (out / "vae.safetensors").exists() and (out / "loss.png").stat().st_size > 0
    args = build_parser().parse_args(["train", "dit", "--preset", "tiny", "--out", str(tmp_path / "d"), "--steps", "1"])
    with pytest.raises(SystemExit, match="--vae"):
        train_command(args)


def test_loss_plot_is_written(vae_run, tmp_path):
    plot_loss(vae_run / "log.jsonl", tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unfinished_dit_run_exports_its_newest_checkpoint(vae_run, tmp_path):
    from model.pipeline import TextToVideo

    run = tmp_path / "unfinished"
    train_dit(TINY, vae_run, run, steps=4, seed=0, stop_after=2, **DIT_ARGS)
    assert not (run / "export").exists()
    parser = build_parser()
    target = tmp_path / "model"
    assert train_command(parser.parse_args(["train", "export", "--out", str(run), "--vae", str(vae_run),
                                            "--to", str(target)])) == 0
    ema = load_file(str(latest_checkpoint(run) / "ema.safetensors"))
    exported = load_file(str(target / "dit.safetensors"))
    assert ema.keys() == exported.keys() and all(torch.equal(ema[k], exported[k]) for k in ema)
    assert TextToVideo.from_pretrained(target).config == TINY
    with pytest.raises(SystemExit, match="--vae"):
        train_command(parser.parse_args(["train", "export", "--out", str(run)]))
    with pytest.raises(SystemExit, match="not a dit run"):
        train_command(parser.parse_args(["train", "export", "--out", str(vae_run), "--vae", str(vae_run),
                                         "--to", str(tmp_path / "other")]))
    # The shipped model's default sampling is chosen after training, by evaluating the weights.
    assert train_command(parser.parse_args(["train", "export", "--out", str(run), "--vae", str(vae_run), "--to",
                                            str(target), "--sampler", "heun", "--sample-steps", "7"])) == 0
    config = TextToVideo.from_pretrained(target).config
    assert (config.flow.sampler, config.flow.steps) == ("heun", 7)
    assert dataclasses.replace(config, flow=TINY.flow) == TINY
    with pytest.raises(ValueError, match="flow.steps must be at least 1"):
        export_checkpoint(run, vae_run, tmp_path / "other", sample_steps=0)
    with pytest.raises(ValueError, match="flow.sampler must be one of euler, heun"):
        export_checkpoint(run, vae_run, tmp_path / "other", sampler="ddim")
    assert not (tmp_path / "other").exists()
    with pytest.raises(SystemExit, match="no checkpoint yet"):
        train_command(parser.parse_args(["train", "export", "--out", str(tmp_path / "empty"), "--vae", str(vae_run),
                                         "--to", str(tmp_path / "other")]))


def test_a_dit_run_can_start_from_an_exported_model_to_fine_tune_it(dit_run, vae_run, tmp_path):
    export = dit_run / "export"
    out = tmp_path / "fine-tune"
    # So small a learning rate that the weights stay where they started: the export's, not random ones.
    train_dit(TINY, vae_run, out, steps=4, seed=5, lr=1e-12, init_from=export, stop_after=2, **DIT_ARGS)
    started = load_file(str(export / "dit.safetensors"))
    checkpoint = latest_checkpoint(out)
    for file_name in ("model.safetensors", "ema.safetensors"):
        weights = load_file(str(checkpoint / file_name))
        assert all(torch.allclose(weights[k], started[k], atol=1e-6) for k in started), file_name
    fresh = tmp_path / "fresh"
    train_dit(TINY, vae_run, fresh, steps=4, seed=5, lr=1e-12, stop_after=2, **DIT_ARGS)
    fresh_weights = load_file(str(latest_checkpoint(fresh) / "model.safetensors"))
    assert any(not torch.allclose(fresh_weights[k], started[k], atol=1e-3) for k in started)
    # Resumed, the run goes on from its own checkpoint and keeps the record of where it started.
    messages = []
    train_dit(TINY, vae_run, out, steps=4, seed=5, lr=1e-12, init_from=export, **{**DIT_ARGS, "log": messages.append})
    assert "--init-from applies only to a new run" in messages[0]
    assert json.loads((latest_checkpoint(out) / "state.json").read_text())["started_from"] == str(export)
    assert json.loads((latest_checkpoint(fresh) / "state.json").read_text())["started_from"] is None


def test_a_fine_tune_is_refused_a_model_it_cannot_start_from(dit_run, vae_run, tmp_path):
    with pytest.raises(ValueError, match="not a model directory: missing dit.safetensors"):
        train_dit(TINY, vae_run, tmp_path / "a", steps=2, seed=0, init_from=vae_run, **DIT_ARGS)
    # The same transformer over another encoder's latents would start from weights that mean nothing there.
    other_vae = tmp_path / "other-vae"
    other_vae.mkdir()
    (other_vae / "config.json").write_text((vae_run / "config.json").read_text())
    weights = load_file(str(vae_run / "vae.safetensors"))
    encoder_weight = next(name for name in weights if name.startswith("encoder.") and weights[name].ndim > 1)
    weights[encoder_weight] = weights[encoder_weight] + 0.01
    save_file(weights, str(other_vae / "vae.safetensors"))
    with pytest.raises(ValueError, match="another autoencoder"):
        train_dit(TINY, other_vae, tmp_path / "b", steps=2, seed=0, init_from=dit_run / "export", **DIT_ARGS)
    # Unless told to relearn the latents: then the layers that touch them start afresh, even at the same shapes.
    # (Another seed than the exported run's, whose short run left its EMA weights near its seed's start.)
    train_dit(TINY, other_vae, tmp_path / "relearn", steps=2, seed=5, lr=1e-12, init_from=dit_run / "export",
              relearn_latents=True, stop_after=1, **DIT_ARGS)
    relearned = load_file(str(latest_checkpoint(tmp_path / "relearn") / "model.safetensors"))
    exported = load_file(str(dit_run / "export" / "dit.safetensors"))
    assert torch.all(relearned["final_layer.linear.weight"].abs() < 1e-6)
    assert not torch.any(exported["final_layer.linear.weight"] == 0)
    assert not torch.allclose(relearned["x_embedder.weight"], exported["x_embedder.weight"], atol=1e-3)
    assert torch.allclose(relearned["blocks.0.attn.qkv.weight"], exported["blocks.0.attn.qkv.weight"], atol=1e-6)
    wider = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, depth=TINY.dit.depth + 1))
    with pytest.raises(ValueError, match="not the one preset"):
        train_dit(wider, vae_run, tmp_path / "c", steps=2, seed=0, init_from=dit_run / "export", **DIT_ARGS)
    assert not [path for name in "abc" for path in (tmp_path / name).glob("ckpt-*")]

    cli = ["train", "dit", "--preset", "tiny", "--out", str(tmp_path / "d"), "--steps", "2", "--threads", "1"]
    with pytest.raises(SystemExit, match="--init-from: no model 'no-such-model'"):
        train_command(build_parser().parse_args(cli + ["--vae", str(vae_run), "--init-from", "no-such-model"]))
    with pytest.raises(SystemExit, match="for the dit stage"):
        train_command(build_parser().parse_args(["train", "decoder", "--preset", "tiny", "--vae", str(vae_run),
                                                 "--out", str(tmp_path / "e"), "--steps", "2",
                                                 "--init-from", str(dit_run / "export")]))
    # A model is named as everywhere else: the shipped model's autoencoder is not the tiny preset's.
    with pytest.raises(SystemExit, match="reel train dit: the autoencoder in .*reel-shapes-v1"):
        train_command(build_parser().parse_args(cli + ["--vae", "reel-shapes-v1", "--init-from", "reel-shapes-v1"]))


def test_a_run_on_another_autoencoder_can_start_from_a_model_relearning_only_its_latent_layers(dit_run, tmp_path):
    from model.train import LATENT_LAYERS

    export = dit_run / "export"
    started = load_file(str(export / "dit.safetensors"))
    # An autoencoder with twice the latent channels: another encoder, and latent patches of another size.
    wider = dataclasses.replace(TINY, vae=dataclasses.replace(TINY.vae, latent_channels=8),
                                dit=dataclasses.replace(TINY.dit, latent_channels=8))
    train_vae(wider, tmp_path / "vae8", steps=1, seed=0, **VAE_ARGS)
    with pytest.raises(ValueError, match="not the one preset"):
        train_dit(wider, tmp_path / "vae8", tmp_path / "refused", steps=2, seed=0, init_from=export, **DIT_ARGS)
    out = tmp_path / "relearn"
    messages = []
    train_dit(wider, tmp_path / "vae8", out, steps=4, seed=5, lr=1e-12, init_from=export, relearn_latents=True,
              stop_after=2, **{**DIT_ARGS, "log": messages.append})
    assert any("its latent layers afresh" in m for m in messages)
    for file_name in ("model.safetensors", "ema.safetensors"):
        weights = load_file(str(latest_checkpoint(out) / file_name))
        carried = [name for name in weights if not name.startswith(LATENT_LAYERS)]
        assert len(carried) > len(weights) // 2
        assert all(torch.allclose(weights[name], started[name], atol=1e-6) for name in carried), file_name
        # The latent layers are a fresh network's: an output layer at zero, an embedding of the new patch size.
        assert weights["x_embedder.weight"].shape[1] == 2 * started["x_embedder.weight"].shape[1]
        assert not torch.any(started["final_layer.linear.weight"] == 0)
        assert torch.all(weights["final_layer.linear.weight"].abs() < 1e-6), file_name
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["started_from"] == str(export) and state["relearn_latents"] is True
    # Resumed, it goes on from its own weights and keeps its record.
    train_dit(wider, tmp_path / "vae8", out, steps=4, seed=5, lr=1e-12, init_from=export, relearn_latents=True,
              **DIT_ARGS)
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["step"] == 4 and state["relearn_latents"] is True
    resumed = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    assert torch.all(resumed["final_layer.linear.weight"].abs() < 1e-6)
    assert resumed["x_embedder.weight"].shape[1] == 2 * started["x_embedder.weight"].shape[1]
    # Any other difference in the network is still refused.
    deeper = dataclasses.replace(wider, dit=dataclasses.replace(wider.dit, depth=TINY.dit.depth + 1))
    with pytest.raises(ValueError, match="not the one preset"):
        train_dit(deeper, tmp_path / "vae8", tmp_path / "deeper", steps=2, seed=0, init_from=export,
                  relearn_latents=True, **DIT_ARGS)
    # Unless told to grow too: then the latent layers start afresh, and the 2 blocks are followed by a new one.
    train_dit(deeper, tmp_path / "vae8", tmp_path / "deeper-grown", steps=2, seed=5, lr=1e-12, init_from=export,
              relearn_latents=True, grow_depth=True, stop_after=1, **DIT_ARGS)
    grown = load_file(str(latest_checkpoint(tmp_path / "deeper-grown") / "model.safetensors"))
    assert torch.all(grown["final_layer.linear.weight"].abs() < 1e-6)
    assert torch.allclose(grown["blocks.1.attn.qkv.weight"], started["blocks.1.attn.qkv.weight"], atol=1e-6)
    assert torch.all(grown["blocks.2.attn.proj.weight"].abs() < 1e-6)
    assert not torch.any(started["blocks.1.attn.proj.weight"] == 0)
    with pytest.raises(SystemExit, match="--relearn-latents goes with --init-from"):
        train_command(build_parser().parse_args(["train", "dit", "--preset", "tiny", "--vae", str(tmp_path / "vae8"),
                                                 "--out", str(tmp_path / "cli"), "--steps", "2", "--relearn-latents"]))


def test_blocks_spread_evenly_over_a_deeper_network():
    names = spread_blocks({f"blocks.{i}.attn.proj.weight": i for i in range(8)} | {"final_layer.linear.weight": -1}, 8, 12)
    assert names == {f"blocks.{place}.attn.proj.weight": i for i, place in enumerate([0, 1, 3, 4, 6, 7, 9, 10])} | {
        "final_layer.linear.weight": -1}
    assert list(spread_blocks({f"blocks.{i}.x": i for i in range(2)}, 2, 4)) == ["blocks.0.x", "blocks.2.x"]


def assert_same_function(started: torch.nn.Module, grown: torch.nn.Module) -> None:
    """Two transformers give the same, non-trivial velocity for one input."""
    generator = torch.Generator().manual_seed(0)
    latents = [torch.randn(TINY.dit.latent_channels, 3, 8, 8, generator=generator)]
    text_states, text_mask = torch.randn(1, 5, 384, generator=generator), torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        before = started(latents, torch.tensor([0.4]), text_states, text_mask)[0]
        after = grown(latents, torch.tensor([0.4]), text_states, text_mask)[0]
    assert before.abs().mean() > 1e-3 and torch.allclose(before, after, atol=1e-5)


def test_a_deeper_run_grows_from_a_model_and_starts_computing_what_it_did(dit_run, vae_run, tmp_path):
    from model.dit import DiT

    export = dit_run / "export"
    deeper = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, depth=TINY.dit.depth + 2))
    with pytest.raises(ValueError, match="not the one preset.*--grow-depth starts a deeper one"):
        train_dit(deeper, vae_run, tmp_path / "refused-deeper", steps=2, seed=0, init_from=export, **DIT_ARGS)
    shallower = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, depth=1))
    with pytest.raises(ValueError, match="has 2 blocks, more than the 1"):
        train_dit(shallower, vae_run, tmp_path / "refused-shallower", steps=2, seed=0, init_from=export, grow_depth=True,
                  **DIT_ARGS)
    # Only depth may differ: a wider network is refused, and not told that growing would do.
    wider = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, hidden_size=96, depth=3))
    with pytest.raises(ValueError, match=r"is not the one preset 'tiny' builds \(the network and what it predicts must match\)$"):
        train_dit(wider, vae_run, tmp_path / "refused-wider", steps=2, seed=0, init_from=export, grow_depth=True,
                  **DIT_ARGS)
    out, messages = tmp_path / "grown", []
    # So small a learning rate that the weights stay where they started.
    train_dit(deeper, vae_run, out, steps=4, seed=5, lr=1e-12, init_from=export, grow_depth=True, stop_after=1,
              **{**DIT_ARGS, "log": messages.append})
    assert any("new blocks [1, 3] starting as the identity" in m for m in messages)
    started = load_file(str(export / "dit.safetensors"))
    grown = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    assert torch.allclose(grown["blocks.2.mlp.fc2.weight"], started["blocks.1.mlp.fc2.weight"], atol=1e-6)
    assert torch.all(grown["blocks.3.mlp.fc2.weight"].abs() < 1e-6)
    assert not torch.any(grown["blocks.3.mlp.fc1.weight"] == 0)  # a fresh block's inside, only its outputs at zero
    shallow_net, deep_net = DiT(TINY.dit).eval(), DiT(deeper.dit).eval()
    shallow_net.load_state_dict(started)
    deep_net.load_state_dict(grown)
    assert_same_function(shallow_net, deep_net)
    with pytest.raises(SystemExit, match="--grow-depth goes with --init-from"):
        train_command(build_parser().parse_args(["train", "dit", "--preset", "tiny", "--vae", str(vae_run),
                                                 "--out", str(tmp_path / "cli"), "--steps", "2", "--grow-depth"]))


def test_both_stages_train_on_a_folder_of_videos_and_fine_tune_the_shipped_way(vae_run, dit_run, tmp_path):
    from test_folder import write_captions, write_video

    from model.data import Scene, ShapeObject, render
    from model.train import FolderClips

    # Longer, larger and faster than anything the model makes, as a camera's videos are.
    folder = tmp_path / "videos"
    folder.mkdir()
    scenes = [Scene("black", (ShapeObject("red", "circle", "large", "right"),)),
              Scene("white", (ShapeObject("blue", "square", "medium", "up"),))]
    for number, scene in enumerate(scenes):
        write_video(folder / f"clip{number}.mp4", render(scene, 208, 128, 1 + 6 * 24), fps=24)
    write_captions(folder, [{"file": f"clip{n}.mp4", "caption": f"clip {n}"} for n in range(len(scenes))])
    video, text = FolderClips(str(folder), seed=0, config=TINY).item(0)
    largest_side = max(max(size) for size in TINY.sizes)
    # Taken at 8 fps, at most 4 s (33 frames) long and scaled to the largest canvas, aspect kept.
    assert video.shape == (33, round(128 * largest_side / 208 / 16) * 16, largest_side, 3) and text.startswith("clip")

    train_vae(TINY, tmp_path / "vae", steps=2, seed=0, data=str(folder), **VAE_ARGS)
    assert (tmp_path / "vae" / "vae.safetensors").is_file()
    out = tmp_path / "dit"
    args = build_parser().parse_args(["train", "dit", "--preset", "tiny", "--vae", str(vae_run), "--data", str(folder),
                                      "--init-from", str(dit_run / "export"), "--out", str(out), "--steps", "2",
                                      "--token-budget", "160", "--threads", "1"])
    assert train_command(args) == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1] and all(r["clips"] >= 1 for r in records)
    assert (out / "export" / "dit.safetensors").is_file()
    # A folder it cannot use is named, not a traceback.
    (folder / "captions.jsonl").unlink()
    for stage in ("vae", "dit"):
        args = build_parser().parse_args(["train", stage, "--preset", "tiny", "--vae", str(vae_run), "--data", str(folder),
                                          "--out", str(tmp_path / f"no-captions-{stage}"), "--steps", "2"])
        with pytest.raises(SystemExit, match=f"reel train {stage}: .*captions.jsonl is missing"):
            train_command(args)


def test_a_run_with_an_output_convolution_starts_from_a_model_without_one_computing_what_it_did(dit_run, vae_run, tmp_path):
    from model.dit import DiT

    export = dit_run / "export"
    with_conv = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, output_conv_channels=4))
    out, messages = tmp_path / "conv", []
    train_dit(with_conv, vae_run, out, steps=4, seed=5, lr=1e-12, init_from=export, stop_after=1,
              **{**DIT_ARGS, "log": messages.append})
    assert any("its output convolution new, starting at zero" in m for m in messages)
    started = load_file(str(export / "dit.safetensors"))
    conv_net, plain_net = DiT(with_conv.dit).eval(), DiT(TINY.dit).eval()
    conv_net.load_state_dict(load_file(str(latest_checkpoint(out) / "model.safetensors")))
    plain_net.load_state_dict(started)
    assert_same_function(plain_net, conv_net)
    # The other way, a model's convolution has nowhere to go: refused.
    conv_export = tmp_path / "conv-export"
    export_checkpoint(out, vae_run, conv_export)
    with pytest.raises(ValueError, match="is not the one preset"):
        train_dit(TINY, vae_run, tmp_path / "refused", steps=2, seed=0, init_from=conv_export, **DIT_ARGS)


def test_a_run_can_train_only_some_layers_and_resumes_only_so(dit_run, vae_run, tmp_path):
    export = dit_run / "export"
    with_conv = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, output_conv_channels=4))
    with pytest.raises(ValueError, match="has no parameters named outputconv"):
        train_dit(with_conv, vae_run, tmp_path / "refused", steps=2, seed=0, init_from=export, train_only=("outputconv",),
                  **DIT_ARGS)
    out = tmp_path / "conv-only"
    train_dit(with_conv, vae_run, out, steps=4, seed=5, lr=1e-2, init_from=export, train_only=("output_conv.",),
              stop_after=2, **DIT_ARGS)
    with pytest.raises(ValueError, match="was started with train_only=\\['output_conv.'\\]"):
        train_dit(with_conv, vae_run, out, steps=4, seed=5, lr=1e-2, init_from=export, **DIT_ARGS)
    train_command(build_parser().parse_args(["train", "dit", "--preset", "tiny", "--vae", str(vae_run), "--out",
                                             str(tmp_path / "cli"), "--steps", "1", "--train-only", "final_layer.",
                                             "--token-budget", "160", "--pool-size", "12"]))
    train_dit(with_conv, vae_run, out, steps=4, seed=5, lr=1e-2, init_from=export, train_only=("output_conv.",),
              **DIT_ARGS)
    started = load_file(str(export / "dit.safetensors"))
    trained = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    assert all(torch.equal(started[k], trained[k]) for k in started)
    assert trained["output_conv.conv.weight"].abs().max() > 1e-3  # it learned, from zero
    # From the command line, on a new network: the rest stays at its random start (seed 0), the final layer moves.
    from model.dit import DiT

    torch.manual_seed(0)
    start = DiT(TINY.dit).state_dict()
    cli = load_file(str(latest_checkpoint(tmp_path / "cli") / "model.safetensors"))
    assert all(torch.equal(start[k], cli[k]) for k in start if not k.startswith("final_layer."))
    assert not torch.equal(start["final_layer.linear.weight"], cli["final_layer.linear.weight"])
    with pytest.raises(SystemExit, match="--train-only is for the dit stage"):
        train_command(build_parser().parse_args(["train", "vae", "--preset", "tiny", "--out", str(tmp_path / "v"),
                                                 "--steps", "1", "--train-only", "decoder."]))
