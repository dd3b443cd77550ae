"""bf16 / fp16 exports: the graph runs in the export precision, float32 only where it is kept on purpose, and
TensorRT 10 can parse every operator.

The real-size checks use the "prismatic-7b-shallow" preset: every weight matrix, head count and the vocabulary
of Prismatic-7B (vision 1024 + 1152, projector 2176 -> 8704 -> 4096, LLM 4096 wide with 32 heads, vocab 32064)
at 2 blocks per vision tower and 2 LLM layers, random weights (0.72 G parameters). Measured on the 2-core CPU
machine: a bf16 export takes 36-51 s with a peak RSS of 3.3 GB (the fp32 one with its onnxruntime check 6.1 GB);
nothing had to be reduced to fit. The whole module takes ~3 minutes.

onnxruntime's CPU kernels reject bf16 graphs, so the numbers of reduced-precision graphs are checked on the
tiny model with ONNX's reference evaluator (numpy).
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

from pixelvla_model import PixelVLA, PixelVLAConfig, PixelVLAPolicy, example_inputs, input_names
from pixelvla_model.export import GRAPH_DTYPES, check_onnx_parity, export_onnx, main
from pixelvla_model.runtime import read_manifest
from pixelvla_model.runtime.tensorrt_engine import PRECISIONS

# ---------------------------------------------------------------------------------------------------
# TensorRT 10's ONNX operator support matrix, as data: the operators marked supported ("Y") and their types.
# Source: onnx/onnx-tensorrt, docs/operators.md at the "ONNX-TensorRT 10.1 GA release" commit
# (96e781103cfc4adf4a6bb557e94bac8e693f6f4c, TensorRT 10.x, opsets 9 to 20).
# ---------------------------------------------------------------------------------------------------
_FLOAT = ("FLOAT", "FLOAT16", "BFLOAT16")
_NUMERIC = _FLOAT + ("INT32", "INT64")
_ANY = _NUMERIC + ("BOOL",)
_SUPPORT_GROUPS = {
    _FLOAT: """Acos Acosh Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu Clip Conv ConvTranspose Cos
        Cosh CumSum Dropout Einsum Elu Erf Exp Floor GRU Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
        GroupNormalization HardSigmoid HardSwish Hardmax ImageScaler InstanceNormalization IsInf LRN LSTM
        LayerNormalization LeakyRelu Log LogSoftmax LpNormalization LpPool MatMul MaxPool MeanVarianceNormalization
        PRelu ParametricSoftplus Pow QuantizeLinear RNN RandomNormal RandomNormalLike RandomUniform
        RandomUniformLike Reciprocal Resize Round ScaledTanh Scan Selu Sigmoid Sin Sinh Softmax Softplus Softsign
        Sqrt Tan Tanh ThresholdedRelu Upsample""",
    _NUMERIC: """Abs Add ArgMax ArgMin DepthToSpace Div Equal Greater GreaterOrEqual IsNaN Less LessOrEqual Max Mean
        Min Mod Mul Neg Pad Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
        ReduceProd ReduceSum ReduceSumSquare Relu Scatter ScatterElements ScatterND Shrink Sign SpaceToDepth Sub
        Sum TopK Gelu""",
    _ANY: """Concat Constant ConstantOfShape Expand EyeLike Flatten Gather GatherElements GatherND Identity If Loop
        OneHot Reshape ReverseSequence Shape Size Slice Split Squeeze Tile Transpose Trilu Unsqueeze Where""",
    _ANY + ("UINT8",): "Cast CastLike",
    ("FLOAT", "FLOAT16"): "DeformConv GridSample Mish NonMaxSuppression NonZero RoiAlign",
    ("BOOL",): "And Not Or Xor",
}
TRT10_ONNX_SUPPORT = {op: set(types) for types, ops in _SUPPORT_GROUPS.items() for op in ops.split()}

ONNX_FLOAT_TYPE = {"bf16": TensorProto.BFLOAT16, "fp16": TensorProto.FLOAT16}

# ---------------------------------------------------------------------------------------------------
# The float32 tensors a bf16 / fp16 graph keeps on purpose: per module (innermost class of the node that
# makes the tensor, from the exporter's node metadata), the operators allowed to make them.
# ---------------------------------------------------------------------------------------------------
FP32_INPUTS = {"pixel_values", "target_mask", "prompt_coords", "prompt_point_mask", "prompt_masks"}  # I/O stays
FP32_OUTPUTS = {"actions"}  # float32 at every precision: the bundle's interface does not change
KEPT_FP32 = {
    "PixelVLA": {"Unsqueeze", "AveragePool", "Reshape"},  # target mask -> patch coverage, pooled in float32
    "PixelEncoder": {"ReduceSum", "Cast"},  # the mask's area: torch sums bf16 / fp16 in float32
    "PromptEncoder": {"Sub", "MatMul", "Mul", "Sin", "Cos", "Concat", "Reshape", "Unsqueeze", "ReduceSum", "Clip",
                      "Div"},  # Fourier position encoding of prompt points and mask cells
    "Fp32LayerNorm": {"Cast", "LayerNormalization"},  # every LayerNorm of the towers, prompt encoder, decoder
    "Fp32Conv2d": {"Cast", "Conv"},  # the towers' patch embeddings (opset 18's Conv takes no bf16)
    "LlamaRMSNorm": {"Cast", "Pow", "ReduceMean", "Add", "Sqrt", "Reciprocal", "Mul"},
    "LlamaRotaryEmbedding": {"Cast", "Mul", "Concat", "Cos", "Sin"},  # rotary angles up to 2048 rad
    "LlamaAttention": {"Cast", "Mul", "Add", "Softmax"},  # scores, + additive causal / padding mask, softmax
    "SiglipAttention": {"Cast", "Mul", "Softmax"},  # scores and softmax (no mask)
    "Dinov2WithRegistersAttention": {"Cast", "Mul", "Softmax"},
}


def module_of(node: onnx.NodeProto) -> str:
    """Innermost module class the exporter recorded for ``node`` ("?" when none)."""
    meta = {p.key: p.value for p in node.metadata_props}
    hierarchy = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
    modules = [c for c in hierarchy if not c.startswith(("aten.", "prims."))]
    return modules[-1].rsplit(".", 1)[-1] if modules else "?"


def typed_graph(path: Path) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The graph without its weights, shape-inferred, and {tensor name: ONNX elem type}."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return model, types


def float32_tensors_by_module(model: onnx.ModelProto, types: dict[str, int]) -> dict[str, set[str]]:
    """{module: op types} over the float32 tensors that are neither graph inputs nor outputs. A tensor made by
    a node counts for that node's module; a float32 weight / constant for its consumers' modules."""
    g = model.graph
    io = {v.name for v in [*g.input, *g.output]}
    found: dict[str, set[str]] = {}
    for node in g.node:
        for out in node.output:
            if types.get(out) == TensorProto.FLOAT and out not in io:
                found.setdefault(module_of(node), set()).add(node.op_type)
    fp32_weights = {t.name for t in g.initializer if t.data_type == TensorProto.FLOAT}
    for node in g.node:
        if fp32_weights & set(node.input):
            found.setdefault(module_of(node), set())  # the module must be one that keeps float32
    return found


def shallow_7b_model() -> PixelVLA:
    torch.manual_seed(0)
    return PixelVLA(PixelVLAConfig.from_preset("prismatic-7b-shallow")).eval()


# ---------------------------------------------------------------------------------------------------
# real widths (slow: ~1 min per export on 2 cores)
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["bf16", "fp16"])
def shallow_7b_export(request, tmp_path_factory) -> tuple[str, Path]:
    path = tmp_path_factory.mktemp(f"shallow-7b-{request.param}") / "model.onnx"
    info = export_onnx(shallow_7b_model(), path, precision=request.param, external_data=True)
    assert info["external_data"] and info["precision"] == request.param
    return request.param, path


@pytest.mark.slow
def test_shallow_7b_graph_checks_with_its_weights_in_one_data_file(shallow_7b_export):
    precision, path = shallow_7b_export
    # path form: reads model.onnx.data beside it; full_check: every operator's input types allowed at opset 18
    onnx.checker.check_model(str(path), full_check=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    weights = onnx.load(str(path), load_external_data=False).graph.initializer
    locations = {e.value for t in weights if uses_external_data(t) for e in t.external_data if e.key == "location"}
    assert locations == {"model.onnx.data"}
    assert path.stat().st_size < 5e6  # the graph only; ~1.4 GB of weights sit in the data file
    assert 1.3e9 < (path.parent / "model.onnx.data").stat().st_size < 1.6e9  # 0.72 G parameters x 2 bytes


@pytest.mark.slow
def test_shallow_7b_operators_are_in_tensorrt_10s_support_matrix(shallow_7b_export):
    _, path = shallow_7b_export
    model, types = typed_graph(path)
    names = {v: k for k, v in TensorProto.DataType.items()}
    unsupported = sorted({n.op_type for n in model.graph.node} - set(TRT10_ONNX_SUPPORT))
    assert not unsupported, f"operators TensorRT 10 cannot parse: {unsupported}"
    # the type each operator works in (its first input), and a Cast's target, must be one TensorRT 10 lists
    wrong = {(n.op_type, names[types[t]]) for n in model.graph.node for t in (n.input[:1] + n.output[:1] * (
        n.op_type == "Cast")) if t and names[types[t]] not in TRT10_ONNX_SUPPORT[n.op_type]}
    assert not wrong, f"operator / type pairs outside TensorRT 10's support matrix: {sorted(wrong)}"


@pytest.mark.slow
def test_shallow_7b_is_in_its_precision_except_what_is_kept_float32(shallow_7b_export):
    precision, path = shallow_7b_export
    model, types = typed_graph(path)
    g = model.graph
    low = ONNX_FLOAT_TYPE[precision]
    other = ({TensorProto.FLOAT16, TensorProto.BFLOAT16} - {low}) | {TensorProto.DOUBLE}
    assert not [name for name, t in types.items() if t in other], f"tensors neither {precision} nor float32"
    assert {v.name: v.type.tensor_type.elem_type for v in g.input if v.name in FP32_INPUTS} == dict.fromkeys(
        FP32_INPUTS, TensorProto.FLOAT)
    assert {v.name: v.type.tensor_type.elem_type for v in g.output} == dict.fromkeys(FP32_OUTPUTS, TensorProto.FLOAT)
    # exactly the kept list: more is float32 where it need not be, less is a part that lost its float32
    assert float32_tensors_by_module(model, types) == KEPT_FP32
    # the weights: all in the precision but the two frequency buffers and constants folded from kept parts
    weights = {t.name: t.data_type for t in g.initializer if t.data_type in (TensorProto.FLOAT, low)}
    assert sum(t == low for t in weights.values()) > 100
    assert {"model.llm.rotary_emb.inv_freq", "model.prompt_encoder.fourier_freqs"} <= {
        n for n, t in weights.items() if t == TensorProto.FLOAT}
    low_values = sum(np.prod(t.dims) for t in g.initializer if t.data_type == low)
    fp32_values = sum(np.prod(t.dims) for t in g.initializer if t.data_type == TensorProto.FLOAT)
    assert fp32_values < 1e-4 * low_values  # norm weights and frequencies only


@pytest.mark.slow
def test_shallow_7b_constants_are_representable(shallow_7b_export):
    """No constant overflows the precision: the attention mask fills with finfo(dtype).min, not -1e9 (-inf in
    fp16), and every scalar or small constant is finite."""
    precision, path = shallow_7b_export
    model = onnx.load(str(path), load_external_data=False)
    limit = float(torch.finfo(GRAPH_DTYPES[precision]).max)
    small = [t for t in model.graph.initializer if np.prod(t.dims) <= 4096]
    small += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for t in small:
        if uses_external_data(t):
            load_external_data_for_tensor(t, str(path.parent))
    values = {t.name: onnx.numpy_helper.to_array(t).astype(np.float64) for t in small
              if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)}
    assert values, "no float constants found: the check would be vacuous"
    bad = {name: float(np.abs(v).max()) for name, v in values.items()
           if v.size and not (np.isfinite(v).all() and np.abs(v).max() <= limit)}
    assert not bad, f"constants not representable in {precision}: {bad}"
    mask_fill = float(torch.finfo(GRAPH_DTYPES[precision]).min)
    assert any(v.size == 1 and float(v.reshape(())) == mask_fill for v in values.values())


@pytest.mark.slow
def test_shallow_7b_fp32_export_matches_torch(tmp_path):
    model = shallow_7b_model()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, precision="fp32", external_data=True)
    assert (tmp_path / "model.onnx.data").is_file()
    err = check_onnx_parity(model, path, batch_size=1, text_len=32)
    print(f"prismatic-7b-shallow fp32: onnxruntime vs torch max abs error {err:.3e}")
    assert err <= 1e-4  # the "small" preset's parity tolerance (test/runtime/runtime_cases.PARITY_ATOL)


# ---------------------------------------------------------------------------------------------------
# the numbers of reduced-precision graphs (tiny, through the CLI)
# ---------------------------------------------------------------------------------------------------
def run_reference(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """``actions`` from ONNX's reference evaluator (numpy; onnxruntime has no bf16 CPU kernels)."""
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):  # the reference one uses np.choose, limited to 64 choices along the axis
        def _run(self, data, indices, axis=None):
            return (np.take_along_axis(data, indices, axis=axis),)

    return ReferenceEvaluator(str(path), new_ops=[GatherElements]).run(["actions"], feeds)[0]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-ckpt")
    PixelVLAPolicy.from_config(PixelVLAConfig.from_preset("tiny"), seed=0).save_pretrained(path)
    return path


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_bundle_computes_the_fp32_actions(tiny_checkpoint, tmp_path, precision):
    """The CLI's bf16 / fp16 bundle: precision in the manifest, weights in model.onnx.data, and its graph gives
    the fp32 torch model's actions up to the precision's rounding, for several token lengths."""
    out = tmp_path / "bundle"
    assert main([str(tiny_checkpoint), str(out), "--precision", precision, "--external-data", "--quiet"]) == 0
    manifest = read_manifest(out)
    assert manifest["precision"] == precision and manifest["onnx_external_data"] is True
    assert "model.onnx.data" in manifest["files"] and "export_check" not in manifest
    model = PixelVLA.from_pretrained(tiny_checkpoint).eval()
    for text_len, seed in ((2, 0), (9, 1), (64, 2)):
        x = example_inputs(model.config, batch_size=1, text_len=text_len, seed=seed)
        with torch.no_grad():
            want = model(**x).actions.numpy()
        got = run_reference(out / "model.onnx", {n: x[n].numpy() for n in input_names(model.config)})
        assert got.dtype == np.float32 and got.shape == want.shape
        # measured: bf16 1.1-1.3 % of the actions' scale; without the attention mask 7-13 %
        assert np.abs(got - want).max() < 0.03 * np.abs(want).max(), (text_len, np.abs(got - want).max())


def test_precisions_agree_with_the_engine_builder():
    assert set(GRAPH_DTYPES) == set(PRECISIONS)


def test_unknown_precision_is_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="precision must be one of"):
        export_onnx(tiny_model, tmp_path / "model.onnx", precision="int8")
