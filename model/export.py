"""pixelvla-export: checkpoint (or preset) -> ONNX prefill graph -> optional TensorRT engine -> engine bundle.

    pixelvla-export CHECKPOINT_DIR OUT_DIR                 ONNX bundle (any machine)
    pixelvla-export tiny OUT_DIR                           random-weight preset model (tests, benchmarks)
    pixelvla-export CHECKPOINT_DIR OUT_DIR --precision bf16  the graph in bf16 (what a robot's engine runs)
    pixelvla-export OUT_DIR OUT_DIR --engine               add a TensorRT engine to a bundle (robot / GPU host)

The ONNX graph ("prefill graph"): opset 18 (ONNX_OPSET), one output ``actions`` (B, N_c, 7) float32
normalised, inputs in modeling.input_names(config) order:

    pixel_values      (B, 3, 224, 224) float32 in [0, 1]     (per-tower mean/std happen in the graph)
    input_ids         (B, T) int64, BOS first, right-padded  T = "text_len", the only dynamic dim
    attention_mask    (B, T) int64, 1 = real token
    target_mask       (B, 224, 224) float32 in [0, 1], all zero = no target
    prompt_coords     (B, K, P, 2) float32   prompt_point_mask (B, K, P) float32
    prompt_types      (B, K) int64           prompt_labels     (B, K) int64
    prompt_masks      (B, K, S, S) float32   (K, P, S: max_prompts, max_prompt_points, prompt_mask_size)

B is fixed at export (--batch-size, default 1: a robot runs one frame); T may be any length in
[--min-text-len, --max-text-len] (the TensorRT optimisation profile: min / opt / max). Weights above
~1.5 GB, and with --external-data all weights, go to external data (one file, model.onnx.data) because a
protobuf file cannot exceed 2 GB.

--precision (fp32 default, bf16, fp16) is the dtype of the graph's weights and activations, recorded in the
manifest as "precision". The inputs and the output stay float32 (the bundle's I/O is the same at every
precision) and are cast at the graph's edges; inside, float32 is kept on purpose where low precision breaks
the numbers (modeling.to_reduced_precision: normalisations, attention softmax, patch-embedding convolutions,
rotary and prompt position encodings). A TensorRT engine is built strongly typed from the graph, so it runs
in the graph's precision: to change an engine's precision, re-export the graph. onnxruntime's CPU kernels do
not cover bf16 / fp16 graphs, so the torch parity check runs for fp32 exports only; docs/deployment.md says
how to check the rest.

The bundle is written into a temp dir beside OUT_DIR and renamed into place only when complete: a failed
export never replaces a good bundle. Layout and manifest fields: runtime/bundle.py.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .configuration import PRESETS, PixelVLAConfig
from .files import CONFIG_FILE, load_norm_stats, save_norm_stats
from .modeling import PixelVLA, example_inputs, input_names, load_model, to_reduced_precision
from .runtime.bundle import (ENGINE_FILE, FORMAT, FORMAT_VERSION, MANIFEST_FILE, ONNX_FILE, BundleError,
                             atomic_directory, io_spec, read_manifest, strip_to_engine, verify_bundle, weights_sha256,
                             write_manifest)
from .runtime.policy import PixelVLAPolicy
from .runtime.tensorrt_engine import graph_precision
from .tokenizer import load_tokenizer

logger = logging.getLogger("pixelvla_model.export")

ONNX_OPSET = 18
EXTERNAL_DATA_BYTES = 1_500_000_000  # above this the weights go to model.onnx.data (protobuf limit: 2 GB)
DEFAULT_TEXT_LEN = (2, 64, 256)  # min / opt / max tokens
#: --precision -> dtype of the graph's weights and activations
GRAPH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # tensorrt_engine.PRECISIONS


class PrefillGraph(torch.nn.Module):
    """PixelVLA.forward with positional tensor inputs (input_names(config) order: INPUT_NAMES, then
    proprio when the model takes the robot state, then click_to_tcp when it places the prompts) and the actions
    as the only output, float32 in and out whatever the model's dtype (the rest of the model casts its other
    float inputs itself)."""

    def __init__(self, model: PixelVLA):
        super().__init__()
        self.model = model

    def forward(self, pixel_values, input_ids, attention_mask, target_mask, prompt_coords, prompt_point_mask,
                prompt_types, prompt_labels, prompt_masks, proprio=None, click_to_tcp=None):
        pixel_values = pixel_values.to(self.model.projector.fc1.weight.dtype)
        return self.model(pixel_values, input_ids, attention_mask, target_mask, prompt_coords, prompt_point_mask,
                          prompt_types, prompt_labels, prompt_masks, proprio=proprio,
                          click_to_tcp=click_to_tcp).actions.float()


def versions() -> dict[str, Optional[str]]:
    """Versions of everything that shaped the bundle (None where not installed)."""
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name, module in [("pixelvla_ros", None), ("torch", "torch"), ("transformers", "transformers"),
                         ("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnxruntime", "onnxruntime"),
                         ("tensorrt", "tensorrt")]:
        try:
            if module is None:
                from importlib.metadata import version

                out[name] = version(name)
            else:
                out[name] = __import__(module).__version__
        except Exception:  # not installed
            out[name] = None
    return out


def state_dict_sha256(model: torch.nn.Module) -> str:
    """Digest of in-memory weights (preset models): name, dtype, shape and bytes of every tensor in order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------
def load_source(source: str, seed: int = 0):
    """(model, tokenizer, norm_stats, weights entry, default model id) from a checkpoint dir or preset name."""
    path = Path(source)
    if path.is_dir():
        model = load_model(path)
        tokenizer = load_tokenizer(path)
        norm_stats = load_norm_stats(path)
        if not norm_stats:
            logger.warning("%s has no norm_stats.json: the bundle cannot un-normalise actions", path)
        digest, files = weights_sha256(path)
        return model, tokenizer, norm_stats, {"sha256": digest, "source": str(path.resolve()), "files": files}, \
            path.resolve().name
    if source in PRESETS:
        policy = PixelVLAPolicy.from_config(PixelVLAConfig.from_preset(source), seed=seed)
        weights = {"sha256": state_dict_sha256(policy.model), "source": f"preset {source} (random, seed {seed})",
                   "files": {}}
        return policy.model, policy.tokenizer, policy.norm_stats, weights, f"{source}-random-seed{seed}"
    raise BundleError(path, f"is neither a checkpoint directory nor a preset name ({sorted(PRESETS)})")


def export_onnx(model: PixelVLA, path: str | os.PathLike, batch_size: int = 1,
                text_len: tuple[int, int, int] = DEFAULT_TEXT_LEN, opset: int = ONNX_OPSET, precision: str = "fp32",
                external_data: Optional[bool] = None) -> dict[str, Any]:
    """Write the prefill graph in ``precision`` to ``path`` (+ path.data: the weights as external data when
    ``external_data``, or when None and they exceed EXTERNAL_DATA_BYTES); returns graph facts. A bf16 / fp16
    export casts ``model`` in place (modeling.to_reduced_precision)."""
    if precision not in GRAPH_DTYPES:
        raise ValueError(f"precision must be one of {sorted(GRAPH_DTYPES)}, got {precision!r}")
    lo, opt, hi = text_len
    config = model.config
    limit = config.max_position_embeddings - config.prefix_tokens
    if not 2 <= lo <= opt <= hi or lo == hi:
        raise ValueError(f"text lengths need 2 <= min <= opt <= max and min < max, got {text_len}")
    if hi > limit:
        raise ValueError(f"max text length {hi} exceeds what the LLM holds after the {config.prefix_tokens} "
                         f"image/pixel/prompt tokens ({limit} = max_position_embeddings - prefix tokens)")
    model = to_reduced_precision(model.float().eval(), GRAPH_DTYPES[precision])
    graph = PrefillGraph(model).eval()
    example = example_inputs(config, batch_size=batch_size, text_len=opt)
    t_dim = torch.export.Dim("text_len", min=lo, max=hi)
    names = input_names(config)
    dynamic = {name: None for name in names}
    dynamic["input_ids"] = dynamic["attention_mask"] = {1: t_dim}
    nbytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    external = nbytes > EXTERNAL_DATA_BYTES if external_data is None else external_data
    t0 = time.time()
    logger.info("exporting the %s prefill graph (opset %d, batch %d, text %d..%d, %.1f MB of weights)", precision,
                opset, batch_size, lo, hi, nbytes / 1e6)
    with torch.no_grad(), warnings.catch_warnings():
        # known and harmless: both dynamic inputs share the one "text_len" axis; a torch-internal deprecation
        warnings.filterwarnings("ignore", message=".*axis name: text_len will not be used.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*", category=FutureWarning)
        program = torch.onnx.export(graph, tuple(example[n] for n in names), None, dynamo=True,
                                    input_names=list(names), output_names=["actions"], opset_version=opset,
                                    dynamic_shapes=dynamic, verbose=False)
    program.save(str(path), external_data=external)
    del program  # its graph holds a reference to every weight
    import onnx

    onnx.checker.check_model(str(path))  # path form: works with external data
    logger.info("ONNX written in %.1f s: %s", time.time() - t0, path)
    return {"external_data": external, "weight_bytes": nbytes, "precision": precision}


def check_onnx_parity(model: PixelVLA, onnx_path: str | os.PathLike, batch_size: int, text_len: int,
                      seed: int = 1) -> float:
    """Max |onnxruntime - torch| on example inputs (all prompt types), a sanity check recorded in the manifest."""
    import onnxruntime as ort

    example = example_inputs(model.config, batch_size=batch_size, text_len=text_len, seed=seed)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(["actions"], {n: example[n].numpy() for n in input_names(model.config)})[0]
    with torch.no_grad():
        want = model(**example).actions.numpy()
    return float(np.abs(got - want).max())


def _copy_bundle(src: Path, dst: Path, skip: set[str]) -> None:
    """Hard-link (or copy) the files of bundle ``src`` into ``dst``, leaving out ``skip``."""
    for p in src.rglob("*"):
        rel = p.relative_to(src).as_posix()
        if not p.is_file() or rel in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(p, dst / rel)
        except OSError:
            shutil.copy2(p, dst / rel)


def add_engine(bundle: Path, manifest: dict, work: Path, workspace_bytes: int, timing_cache: Optional[Path]) -> dict:
    from .runtime.tensorrt_engine import build_engine, tensorrt_info

    precision = graph_precision(manifest)
    engine = build_engine(work / manifest["onnx"], manifest, precision=precision, workspace_bytes=workspace_bytes,
                          timing_cache=timing_cache)
    (work / ENGINE_FILE).write_bytes(engine)
    manifest = dict(manifest, engine=ENGINE_FILE, tensorrt=tensorrt_info(precision, workspace_bytes))
    manifest["versions"] = dict(manifest["versions"], tensorrt=manifest["tensorrt"]["version"])
    return manifest


def export_bundle(source: str | os.PathLike, out: str | os.PathLike, *, model_id: Optional[str] = None,
                  seed: int = 0, batch_size: int = 1, text_len: tuple[int, int, int] = DEFAULT_TEXT_LEN,
                  opset: int = ONNX_OPSET, engine: bool = False, precision: Optional[str] = None,
                  external_data: Optional[bool] = None, workspace_bytes: int = 4 << 30,
                  timing_cache: Optional[str | os.PathLike] = None, parity_check: bool = True) -> dict[str, Any]:
    """Export ``source`` (checkpoint dir, preset name, or an existing bundle to add an engine to) into the
    bundle directory ``out`` (atomically). Returns the manifest.

    precision: of the graph (default fp32); for an existing bundle None or the precision it was exported in
    (the engine runs in the graph's precision)."""
    out = Path(out)
    if engine:
        from .runtime.tensorrt_engine import import_tensorrt

        import_tensorrt()  # fail before any work where TensorRT is missing
        if not torch.cuda.is_available():
            raise RuntimeError("building a TensorRT engine needs a CUDA GPU; torch sees none")
    cache = Path(timing_cache) if timing_cache else out.parent / f"{out.name}.timing.cache"

    src = Path(source)
    if src.is_dir() and (src / MANIFEST_FILE).is_file():  # existing bundle: (re)build its engine
        if not engine:
            raise ValueError(f"{src} is already a bundle; pass --engine to build its TensorRT engine")
        manifest = verify_bundle(src)
        exported = graph_precision(manifest)
        if precision not in (None, exported):
            raise ValueError(f"{src} holds a {exported} graph and its engine runs in the graph's precision; export "
                             f"the checkpoint again with --precision {precision} to get a {precision} engine")
        with atomic_directory(out) as work:
            _copy_bundle(src, work, skip={MANIFEST_FILE, ENGINE_FILE})
            manifest = add_engine(src, manifest, work, workspace_bytes, cache)
            write_manifest(work, manifest)
        return read_manifest(out)

    precision = precision or "fp32"

    model, tokenizer, norm_stats, weights, default_id = load_source(str(source), seed=seed)
    config = model.config
    if config.lora_r > 0:
        logger.info("merging LoRA adapters into the LLM for export")
        model.llm = model.llm.merge_and_unload()
    inputs, outputs = io_spec(config, batch_size)
    with atomic_directory(out) as work:
        graph = export_onnx(model, work / ONNX_FILE, batch_size=batch_size, text_len=text_len, opset=opset,
                            precision=precision, external_data=external_data)
        manifest: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model_id": model_id or default_id,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": config.to_dict(), "chunk_size": config.chunk_size, "action_dim": config.action_dim,
            "image_size": config.image_size, "batch_size": batch_size,
            "text_len": dict(zip(("min", "opt", "max"), text_len)), "inputs": inputs, "outputs": outputs,
            "opset": opset, "weights": weights, "onnx": ONNX_FILE, "engine": None, "tensorrt": None,
            "onnx_external_data": graph["external_data"], "precision": precision, "versions": versions(),
        }
        if parity_check and precision != "fp32":
            logger.info("no onnxruntime parity check for a %s graph (its CPU kernels are float32); check the engine "
                        "against the fp32 bundle on the GPU host (docs/deployment.md)", precision)
        elif parity_check:
            err = check_onnx_parity(model, work / ONNX_FILE, batch_size, text_len[1])
            manifest["export_check"] = {"max_abs_error_vs_torch": err, "text_len": text_len[1]}
            logger.info("onnxruntime vs torch on example inputs: max abs error %.2e", err)
            if not err < 1e-3:
                raise RuntimeError(f"the exported graph disagrees with torch (max abs error {err:.3g}); not writing "
                                   "the bundle")
        config.save(work / CONFIG_FILE)
        if norm_stats:
            save_norm_stats(norm_stats, work)
        tokenizer.save_pretrained(str(work))
        if engine:
            manifest = add_engine(work, manifest, work, workspace_bytes, cache)
        write_manifest(work, manifest)
    return read_manifest(out)


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="pixelvla-export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Bundle layout and manifest fields: pixelvla_model/runtime/bundle.py")
    p.add_argument("source", help=f"checkpoint directory, preset name {sorted(PRESETS)}, or a bundle (with --engine)")
    p.add_argument("out", help="bundle directory to write (replaced atomically)")
    p.add_argument("--model-id", help="id recorded in the manifest (default: the checkpoint directory's name)")
    p.add_argument("--seed", type=int, default=0, help="seed of a preset's random weights")
    p.add_argument("--batch-size", type=int, default=1, help="fixed batch size of the graph (default 1)")
    p.add_argument("--min-text-len", type=int, default=DEFAULT_TEXT_LEN[0])
    p.add_argument("--opt-text-len", type=int, default=DEFAULT_TEXT_LEN[1])
    p.add_argument("--max-text-len", type=int, default=DEFAULT_TEXT_LEN[2])
    p.add_argument("--opset", type=int, default=ONNX_OPSET)
    p.add_argument("--no-parity-check", action="store_true", help="skip the onnxruntime vs torch check")
    p.add_argument("--precision", choices=sorted(GRAPH_DTYPES),
                   help="dtype of the graph's weights and activations, and so of its engine (default fp32; for a "
                        "bundle: the one it was exported in)")
    p.add_argument("--external-data", action="store_true",
                   help="write all weights to model.onnx.data (default: only above ~1.5 GB)")
    g = p.add_argument_group("TensorRT (only where tensorrt imports)")
    g.add_argument("--engine", action="store_true", help="also build a TensorRT engine (model.engine)")
    g.add_argument("--engine-only", action="store_true",
                   help="with --engine: then drop the ONNX graph, leaving what a robot runs (pixelvla-bundle strip)")
    g.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit, GiB")
    g.add_argument("--timing-cache", help="timing cache file (default: OUT.timing.cache beside the bundle)")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.engine_only and not a.engine:
        p.error("--engine-only needs --engine")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.WARNING if a.quiet else logging.INFO)  # our progress; the exporters' INFO stays quiet
    try:
        manifest = export_bundle(
            a.source, a.out, model_id=a.model_id, seed=a.seed, batch_size=a.batch_size,
            text_len=(a.min_text_len, a.opt_text_len, a.max_text_len), opset=a.opset, engine=a.engine,
            precision=a.precision, external_data=a.external_data or None,
            workspace_bytes=int(a.workspace_gb * 2**30), timing_cache=a.timing_cache,
            parity_check=not a.no_parity_check)
        if a.engine_only:
            manifest = strip_to_engine(a.out)
    except (BundleError, ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"pixelvla-export: error: {e}", file=sys.stderr)
        return 2
    summary = {k: manifest[k] for k in ("model_id", "chunk_size", "action_dim", "batch_size", "text_len", "onnx",
                                        "engine", "tensorrt")}
    summary["precision"] = graph_precision(manifest)
    summary.update(bundle=str(Path(a.out).resolve()), weights_sha256=manifest["weights"]["sha256"],
                   export_check=manifest.get("export_check"))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
