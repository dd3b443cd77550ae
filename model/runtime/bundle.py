"""Engine bundles: the directory a robot loads, its manifest, and the checks made before running it.

Bundle layout (written by ``pixelvla-export``, see pixelvla_model.export)::

    <bundle>/
      manifest.json          what this bundle is (fields below); written last, so a directory without
                             it was never finished
      model.onnx             the prefill graph (ONNX opset 18), weights in the manifest's "precision"
      model.onnx.data        the ONNX weights as external data (only when they exceed ~1.5 GB)
      model.engine           serialized TensorRT engine (only when built on a machine with TensorRT)
      config.json            PixelVLAConfig of the exported network
      norm_stats.json        action statistics (OpenVLA layout) used to un-normalise actions
      tokenizer.json, tokenizer_config.json, ...   the tokenizer the token ids were made with

manifest.json fields::

    format "pixelvla-bundle", format_version 1, model_id, created (UTC ISO 8601)
    config            PixelVLAConfig.to_dict() of the exported network
    chunk_size, action_dim, image_size, batch_size
    text_len          {"min", "opt", "max"}: token lengths the graph / engine accepts
    inputs, outputs   [{"name", "shape", "dtype"}]; "text_len" marks the one dynamic dim
    opset             ONNX opset of model.onnx
    weights           {"sha256": digest of the source weights, "source": where they came from,
                       "files": {file name: sha256}}
    files             {relative path: {"bytes", "sha256"}} for every file of the bundle but the manifest
    onnx, engine      file names (engine: null when no engine was built)
    tensorrt          null, or {"version", "precision", "workspace_bytes", "device", "compute_capability"}
    versions          exporter (pixelvla_ros), python, torch, transformers, onnx, onnxscript, onnxruntime,
                      tensorrt (null where not installed)

Engine-only bundles: once the engine is built, the ONNX graph (30 GB for the 7B) is needed only to build
engines again. :func:`strip_to_engine` drops it (``pixelvla-bundle strip``): manifest, engine, config,
tokenizer and norm stats stay, ``onnx`` becomes null, and only the tensorrt backend runs the bundle. Engines
run only on the TensorRT version and the GPU (compute capability) that built them, so a robot builds its
own from the full bundle (``pixelvla-export <full bundle> <bundle> --engine`` on the robot) or receives one
built on an identical machine.

What a load checks (:func:`verify_runtime_files`, :func:`verify_engine_bundle`): the manifest, the size of
every file, and the sha256 of the files the backend runs (the engine; or the ONNX graph and its data);
``verify_hashes`` hashes every file (``pixelvla-bundle verify`` does, after a copy). :func:`open_engine` hands
the engine to TensorRT as a read-only memory map rather than a Python bytes object: on a Jetson's unified
memory a copy would double the peak.

Every problem with a bundle raises :class:`BundleError` (missing, truncated or corrupt file, bad manifest) or
its subclass :class:`BundleMismatchError` (the bundle is fine but is not what the robot asked for); both name
the file and the problem.
"""
from __future__ import annotations

import hashlib
import json
import os
import mmap
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Iterator, Optional

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
ONNX_DATA_FILE = "model.onnx.data"
ENGINE_FILE = "model.engine"
FORMAT = "pixelvla-bundle"
FORMAT_VERSION = 1
TEXT_LEN = "text_len"  # name of the dynamic token-length dimension in shapes

REQUIRED_FIELDS = ("format", "format_version", "model_id", "config", "chunk_size", "action_dim", "image_size",
                   "batch_size", "text_len", "inputs", "outputs", "opset", "weights", "files", "onnx", "engine",
                   "tensorrt", "versions")


class BundleError(Exception):
    """A bundle that cannot be used: missing / truncated / corrupt files or an invalid manifest."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{self.path}: {problem}")


class BundleMismatchError(BundleError):
    """A valid bundle that does not match what it is asked to run (shapes, chunk size, weights, ...)."""


# ---------------------------------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def combined_sha256(file_hashes: dict[str, str]) -> str:
    """One digest for a set of files: sha256 over "name:sha256\\n" lines in name order."""
    h = hashlib.sha256()
    for name in sorted(file_hashes):
        h.update(f"{name}:{file_hashes[name]}\n".encode())
    return h.hexdigest()


def weights_sha256(model_dir: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """(digest, {file: sha256}) of a checkpoint directory's safetensors weights (what manifests record)."""
    from ..checkpoint import weight_files

    files = {p.name: sha256_file(p) for p in weight_files(model_dir)}
    return combined_sha256(files), files


# ---------------------------------------------------------------------------------------------------
# tensor specs (shared by the exporter, the runtimes and the checks)
# ---------------------------------------------------------------------------------------------------
def io_spec(config, batch_size: Any = 1) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of the prefill graph for a PixelVLAConfig, as manifest entries.

    B = batch_size (an int, or a name for a dynamic dim), T = "text_len", K/P/S = max_prompts /
    max_prompt_points / prompt_mask_size, N_c = chunk_size, P = proprio_dim;
    click_to_tcp (B, 4, 3) with config.prompt_offsets."""
    from ..modeling import input_names

    b, s = batch_size, config.image_size
    k, p, m = config.max_prompts, config.max_prompt_points, config.prompt_mask_size
    shapes = {
        "pixel_values": ([b, 3, s, s], "float32"), "input_ids": ([b, TEXT_LEN], "int64"),
        "attention_mask": ([b, TEXT_LEN], "int64"), "target_mask": ([b, s, s], "float32"),
        "prompt_coords": ([b, k, p, 2], "float32"), "prompt_point_mask": ([b, k, p], "float32"),
        "prompt_types": ([b, k], "int64"), "prompt_labels": ([b, k], "int64"),
        "prompt_masks": ([b, k, m, m], "float32"),
    }
    if config.proprio_dim:
        shapes["proprio"] = ([b, config.proprio_dim], "float32")
    if config.prompt_offsets:
        shapes["click_to_tcp"] = ([b, 4, 3], "float32")
    names = input_names(config)
    assert tuple(shapes) == names, "io_spec is out of date with modeling.input_names"
    inputs = [{"name": n, "shape": shapes[n][0], "dtype": shapes[n][1]} for n in names]
    outputs = [{"name": "actions", "shape": [b, config.chunk_size, config.action_dim], "dtype": "float32"}]
    return inputs, outputs


# ---------------------------------------------------------------------------------------------------
# manifest
# ---------------------------------------------------------------------------------------------------
def read_manifest(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        raise BundleError(bundle_dir, "bundle directory does not exist")
    if not path.is_file():
        raise BundleError(path, "missing: not a finished bundle (pixelvla-export writes manifest.json last)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(path, f"not valid JSON ({e}); re-export the bundle") from e
    if not isinstance(manifest, dict):
        raise BundleError(path, "must hold a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in manifest]
    if missing:
        raise BundleError(path, f"missing fields {missing}; re-export the bundle")
    if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(path, f"format {manifest['format']!r} version {manifest['format_version']!r}; this "
                                f"code reads {FORMAT!r} version {FORMAT_VERSION}")
    tl = manifest["text_len"]
    if not (isinstance(tl, dict) and all(isinstance(tl.get(k), int) for k in ("min", "opt", "max"))
            and 1 <= tl["min"] <= tl["opt"] <= tl["max"]):
        raise BundleError(path, f"text_len must be {{min <= opt <= max}} integers, got {tl!r}")
    return manifest


def write_manifest(bundle_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Record every other file (size + sha256) and write manifest.json (fsynced)."""
    bundle_dir = Path(bundle_dir)
    manifest = dict(manifest)
    manifest["files"] = {
        p.relative_to(bundle_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(bundle_dir.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE
    }
    path = bundle_dir / MANIFEST_FILE
    with open(path, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_files(bundle_dir: str | os.PathLike, manifest: dict[str, Any], hashes: bool = True,
                hash_only: Optional[Collection[str]] = None) -> None:
    """Every file the manifest lists is present with its size, and with its sha256 when ``hashes`` (of the files
    named in ``hash_only`` only, when given)."""
    bundle_dir = Path(bundle_dir)
    for name in [manifest["onnx"], manifest["engine"]]:
        if name is not None and name not in manifest["files"]:
            raise BundleError(bundle_dir / MANIFEST_FILE, f"names {name} but does not list it under 'files'")
    for name, meta in manifest["files"].items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(path, "missing from the bundle (listed in manifest.json)")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise BundleError(path, f"is {size} bytes but manifest.json says {meta['bytes']}: truncated or "
                                    "replaced; re-export the bundle")
        if hashes and (hash_only is None or name in hash_only) and sha256_file(path) != meta["sha256"]:
            raise BundleError(path, "sha256 differs from manifest.json: corrupt or replaced; re-export the bundle")


@dataclass
class Expectation:
    """What a robot is configured to run; None = do not check. Compared with a bundle's manifest."""

    chunk_size: Optional[int] = None
    action_dim: Optional[int] = None
    image_size: Optional[int] = None
    batch_size: Optional[int] = None
    text_len: Optional[int] = None  # a token length the bundle must accept
    weights_sha256: Optional[str] = None
    model_id: Optional[str] = None
    inputs: Optional[list[dict]] = None  # [{"name", "shape", "dtype"}], e.g. from io_spec(config)


def check_expectation(bundle_dir: str | os.PathLike, manifest: dict[str, Any],
                      expect: Optional[Expectation]) -> None:
    if expect is None:
        return
    where = Path(bundle_dir) / MANIFEST_FILE
    for field in ("chunk_size", "action_dim", "image_size", "batch_size", "model_id"):
        want = getattr(expect, field)
        if want is not None and manifest[field] != want:
            raise BundleMismatchError(where, f"{field} is {manifest[field]!r} but {want!r} is expected")
    if expect.weights_sha256 is not None and manifest["weights"].get("sha256") != expect.weights_sha256:
        raise BundleMismatchError(where, f"weights sha256 is {manifest['weights'].get('sha256')} but "
                                         f"{expect.weights_sha256} is expected: exported from other weights")
    tl = manifest["text_len"]
    if expect.text_len is not None and not tl["min"] <= expect.text_len <= tl["max"]:
        raise BundleMismatchError(where, f"accepts token lengths {tl['min']}..{tl['max']}, "
                                         f"{expect.text_len} is expected")
    if expect.inputs is not None:
        compare_io(where, "inputs", manifest["inputs"], expect.inputs)


def compare_io(where: str | os.PathLike, what: str, have: list[dict], want: list[dict]) -> None:
    """Names, dtypes and shapes, in order; raise BundleMismatchError naming the first difference."""
    have_names, want_names = [t["name"] for t in have], [t["name"] for t in want]
    if have_names != want_names:
        raise BundleMismatchError(where, f"{what} are {have_names} but {want_names} are expected")
    for h, w in zip(have, want):
        if list(h["shape"]) != list(w["shape"]) or h["dtype"] != w["dtype"]:
            raise BundleMismatchError(where, f"{what[:-1]} {h['name']!r} is {h['dtype']}{list(h['shape'])} but "
                                             f"{w['dtype']}{list(w['shape'])} is expected")


def check_tensorrt_version(bundle_dir: str | os.PathLike, manifest: dict[str, Any], installed: str) -> None:
    """A serialized engine runs only on the TensorRT version that built it."""
    built = (manifest.get("tensorrt") or {}).get("version")
    if built is None:
        raise BundleError(Path(bundle_dir) / MANIFEST_FILE, "has no TensorRT engine (no 'tensorrt' entry); build "
                                                            "one with pixelvla-export --engine on the robot")
    if built != installed:
        raise BundleMismatchError(Path(bundle_dir) / manifest["engine"],
                                  f"was built with TensorRT {built} but TensorRT {installed} is installed; "
                                  f"{rebuild_hint(bundle_dir)}")


def check_compute_capability(bundle_dir: str | os.PathLike, manifest: dict[str, Any], installed: str) -> None:
    """A serialized engine runs only on GPUs of the compute capability that built it ("8.7": Orin, "8.9": Ada)."""
    built_for = manifest.get("tensorrt") or {}
    if built_for.get("compute_capability") != installed:
        raise BundleMismatchError(Path(bundle_dir) / manifest["engine"],
                                  f"was built for a GPU of compute capability {built_for.get('compute_capability')} "
                                  f"({built_for.get('device', 'unknown GPU')}) but this GPU's is {installed}; "
                                  f"{rebuild_hint(bundle_dir)}")


def rebuild_hint(bundle_dir: str | os.PathLike) -> str:
    return (f"rebuild the engine on this robot from the full bundle (the one with model.onnx): "
            f"pixelvla-export <full bundle> {bundle_dir} --engine")


def verify_bundle(bundle_dir: str | os.PathLike, expect: Optional[Expectation] = None,
                  hashes: bool = True, hash_only: Optional[Collection[str]] = None) -> dict[str, Any]:
    """Read and check a bundle (manifest, files, expectation); returns the manifest.

    ``hashes`` re-hashes every file (about 1 s per GB), or those in ``hash_only``; sizes are always checked."""
    manifest = read_manifest(bundle_dir)
    check_files(bundle_dir, manifest, hashes=hashes, hash_only=hash_only)
    check_expectation(bundle_dir, manifest, expect)
    return manifest


def runtime_files(manifest: dict[str, Any], backend: str) -> list[str]:
    """The bundle files ``backend`` runs: hashed at every load (the others by size only)."""
    if backend == "tensorrt":
        return [manifest["engine"]] if manifest["engine"] else []
    names = [manifest["onnx"]] if manifest["onnx"] else []
    return names + [ONNX_DATA_FILE] if ONNX_DATA_FILE in manifest["files"] else names


def verify_runtime_files(bundle_dir: str | os.PathLike, backend: str, expect: Optional[Expectation] = None,
                         verify_hashes: bool = False) -> dict[str, Any]:
    """What a runtime checks before loading a bundle: the manifest, every file's size, the sha256 of the files
    ``backend`` runs (or of every file with ``verify_hashes``), the expectation. Returns the manifest."""
    manifest = read_manifest(bundle_dir)
    check_files(bundle_dir, manifest, hash_only=None if verify_hashes else runtime_files(manifest, backend))
    check_expectation(bundle_dir, manifest, expect)
    return manifest


def verify_engine_bundle(bundle_dir: str | os.PathLike, tensorrt_version: str, compute_capability: str,
                         expect: Optional[Expectation] = None, verify_hashes: bool = False) -> dict[str, Any]:
    """verify_engine_files, then that the engine was built by this TensorRT version for this GPU's compute
    capability (``"8.7"``). Works on engine-only bundles. Returns the manifest."""
    manifest = verify_engine_files(bundle_dir, expect, verify_hashes)
    check_tensorrt_version(bundle_dir, manifest, tensorrt_version)
    check_compute_capability(bundle_dir, manifest, compute_capability)
    return manifest


def verify_engine_files(bundle_dir: str | os.PathLike, expect: Optional[Expectation] = None,
                        verify_hashes: bool = False) -> dict[str, Any]:
    """verify_runtime_files for the tensorrt backend, and that the bundle has an engine: every check that needs
    neither TensorRT nor a GPU. Returns the manifest."""
    manifest = verify_runtime_files(bundle_dir, "tensorrt", expect, verify_hashes)
    if manifest["engine"] is None:
        raise BundleError(Path(bundle_dir) / MANIFEST_FILE, "the bundle has no TensorRT engine ('engine' is null); "
                                                            f"build one: pixelvla-export {bundle_dir} {bundle_dir} "
                                                            "--engine on this machine")
    return manifest


@contextmanager
def open_engine(path: str | os.PathLike) -> Iterator[mmap.mmap]:
    """The serialized engine as a read-only memory map, for ``trt.Runtime.deserialize_cuda_engine`` (which takes
    any buffer): the file's pages are read by the kernel as TensorRT copies them, with no Python copy of the
    engine beside TensorRT's own (on unified memory, a bytes object would double the peak). TensorRT keeps no
    reference to the buffer once deserialize_cuda_engine returns, so the map closes after the ``with``."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        yield blob


def strip_to_engine(bundle_dir: str | os.PathLike, out: Optional[str | os.PathLike] = None) -> dict[str, Any]:
    """Drop the ONNX graph (and its external data) from a bundle that has an engine: what a robot carries.

    In place when ``out`` is None; otherwise ``out`` becomes an engine-only copy (files hard-linked where the
    file system allows) and ``bundle_dir`` keeps its graph. Every file is checked against the manifest first,
    its sha256 included. The kept files' recorded hashes are reused. Returns the new manifest."""
    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir)
    if manifest["engine"] is None:
        raise BundleError(bundle_dir / MANIFEST_FILE, "has no TensorRT engine: build one first "
                                                      f"(pixelvla-export {bundle_dir} {bundle_dir} --engine on the "
                                                      "robot), then strip the graph")
    graph = set(runtime_files(manifest, "onnxruntime"))
    stripped = dict(manifest, onnx=None,
                    files={name: meta for name, meta in manifest["files"].items() if name not in graph})
    if out is None:
        # the manifest first: a crash between the two steps leaves unlisted files behind, never a listed one missing
        _write_manifest_file(bundle_dir, stripped)
        for name in graph:
            (bundle_dir / name).unlink(missing_ok=True)
        return read_manifest(bundle_dir)
    with atomic_directory(out) as work:
        for name in stripped["files"]:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(bundle_dir / name, work / name)
            except OSError:
                shutil.copy2(bundle_dir / name, work / name)
        _write_manifest_file(work, stripped)
    return read_manifest(out)


def _write_manifest_file(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    """manifest.json replaced atomically (temp file, fsync, rename), its "files" as given."""
    tmp = bundle_dir / f".{MANIFEST_FILE}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, bundle_dir / MANIFEST_FILE)


# ---------------------------------------------------------------------------------------------------
# atomic directory writes
# ---------------------------------------------------------------------------------------------------
@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``target``; on success it replaces ``target``, on error it is deleted
    and ``target`` (a good bundle, if any) is left untouched."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary directory
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / target.name)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
