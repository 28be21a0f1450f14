"""Turning a training run into shipped weights: integer tables fitted on training latents.

Kept apart from training so tables can be refitted (more images, other contexts) without
retraining, and so the shipped file is reproducible from a checkpoint by one command.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lpimg.codec.bitplane import fit_codec_tables
from lpimg.codec.model import Codec, ModelConfig
from lpimg.codec.pipeline import LearnedCodec
from lpimg.codec.tables import CodecTables, quantize_pmf, uninformed_tables
from lpimg.codec.train import load_training_images
from lpimg.errors import CodecError


def load_trained_model(path: str | Path) -> Codec:
    """A model from a training checkpoint (``checkpoint.pt``, or a run directory holding it whole
    or packed in parts) or an exported ``final.pt``."""
    if Path(path).is_dir():
        from lpimg.codec.train import load_checkpoint

        blob = load_checkpoint(Path(path))
    else:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    if "model" in blob:  # a resumable checkpoint
        cfg = ModelConfig.from_dict(blob["train_config"]["model"])
        state = blob["model"]
    elif "state" in blob:
        cfg = ModelConfig.from_dict(blob["config"])
        state = blob["state"]
    else:
        raise CodecError(f"{path} is neither a checkpoint nor exported weights")
    model = Codec(cfg)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


def average_trained_models(paths: list[str | Path]) -> Codec:
    """One model whose every floating-point weight is the mean of the runs' (a "model soup").

    Runs that start from the same weights and differ in seed or learning rate end in nearby
    minima; their mean is often better than either (lpimg-c12a and c12b: -0.1 % on the
    selection set). Averaging unrelated runs gives nonsense, so the runs must share the
    architecture exactly; integer buffers must be equal too.
    """
    if not paths:
        raise CodecError("nothing to average")
    models = [load_trained_model(p) for p in paths]
    first = models[0]
    states = [m.state_dict() for m in models]
    for path, m, st in zip(paths[1:], models[1:], states[1:], strict=True):
        if m.cfg != first.cfg or st.keys() != states[0].keys() or any(
                v.shape != states[0][k].shape for k, v in st.items()):
            raise CodecError(f"{path}: not the architecture of {paths[0]}; only runs of one "
                             "architecture can be averaged")
    mean = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            mean[k] = torch.stack([st[k].double() for st in states]).mean(0).to(v.dtype)
        elif all(torch.equal(st[k], v) for st in states[1:]):
            mean[k] = v
        else:
            raise CodecError(f"{k}: integer state differs between the runs; it cannot be averaged")
    first.load_state_dict(mean)
    return first.eval()


def fit_tables(model: Codec, data: list[str], max_images: int = 400, progress: bool = True) -> CodecTables:
    """The model's integer tables: its density, and the significance and sign statistics of the
    latents of up to ``max_images`` training images (Kodak refused)."""
    with torch.no_grad():
        pmf_counts = quantize_pmf(model.density.pmf_table().double().numpy())
    # the analysis does not depend on the tables: any valid set serves to compute the latents
    provisional = LearnedCodec(model, uninformed_tables(pmf_counts), "fitting")
    images = load_training_images(data, min_side=16)[:max_images]
    it = images
    if progress:
        from tqdm import tqdm

        it = tqdm(images, desc="fit tables")
    return fit_codec_tables(pmf_counts, (provisional.analyse(img) for img in it))


def tables_of_same_analysis(model: Codec, source: LearnedCodec) -> CodecTables:
    """``source``'s tables for ``model``, allowed only when both share the analysis and density.

    A synthesis-only run (``--freeze-encoder``) leaves the analysis, the density and so the
    latents as they were, but fitting the tables again on another machine can still move an entry
    by one (float rounding in the analysis puts a latent on the other side of a rounding edge),
    and with it the model id, which would oblige every device to change for nothing. Reusing the
    tables keeps the id; they are refused if any analysis or density weight differs.
    """
    ours, theirs = model.state_dict(), source.model.state_dict()
    for k, v in ours.items():
        if k.startswith("synthesis."):
            continue
        if k not in theirs or theirs[k].shape != v.shape or not torch.equal(theirs[k].float(), v.float()):
            raise CodecError(f"{source.name}: its {k} differs from the run's; its tables belong to "
                             "another analysis, so fit them instead")
    return source.tables


def write_release(model: Codec, tables: CodecTables, out: str | Path, meta: dict) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        # the synthesis runs in float on the server: fp16 storage halves the package
        state[k] = v.half() if k.startswith("synthesis.") and v.is_floating_point() else v
    torch.save({"config": model.cfg.to_dict(), "state": state, "tables": tables.to_dict(),
                "meta": meta}, out)
    return out
