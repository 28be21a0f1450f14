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
