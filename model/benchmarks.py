"""Model benchmarks: ``python -m pixelvla_model.benchmarks [--presets tiny small] [--repeats 20]`` prints JSON.

Measures, for one 224x224 frame + a 20-token instruction + one box prompt + a target mask (batch 1):

1. forward latency (median / p90 over ``--repeats`` runs after warm-up) per preset;
2. the share of the three PixelVLA modules (pixel encoder, prompt encoder, action decoder) in the forward's
   FLOPs (torch.utils.flop_counter, eager attention so attention matmuls are counted) and in its time
   (forward hooks around each top-level module); the FLOP share is also computed for ``prismatic-7b``
   on the meta device (no weights allocated). The extra LLM tokens the modules add (pixel + prompt
   slots) are reported separately;
3. continuous decoding (one forward -> N_c x 7 actions) against OpenVLA-style autoregressive decoding of
   7 action tokens on the same backbone (vision + projector once, LLM prefill, 6 KV-cached decode steps,
   an lm_head over the vocabulary each step): latency ratio per call and per action.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .configuration import PixelVLAConfig
from .modeling import PixelVLA
from .prompts import Box, batch_prompts

logger = logging.getLogger(__name__)
NEW_MODULES = ("pixel_encoder", "prompt_encoder", "decoder")
TOP_MODULES = ("vision", "projector") + NEW_MODULES + ("llm",)


def bench_inputs(config: PixelVLAConfig, text_len: int = 20, device="cpu") -> dict[str, torch.Tensor]:
    """Batch-1 inputs: random image, `text_len` tokens (BOS first), one box prompt, a square target mask."""
    g = torch.Generator().manual_seed(0)
    s = config.image_size
    ids = torch.randint(3, min(config.vocab_size, 259), (1, text_len), generator=g)
    ids[0, 0] = 1
    mask = torch.zeros(1, s, s)
    mask[0, 60:120, 80:160] = 1.0
    x = {"pixel_values": torch.rand(1, 3, s, s, generator=g), "input_ids": ids,
         "attention_mask": torch.ones(1, text_len, dtype=torch.long), "target_mask": mask,
         **batch_prompts([[Box(40.0, 50.0, 150.0, 170.0)]], (s, s), config)}
    return {k: v.to(device) for k, v in x.items()}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _stats(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"median_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
            "min_ms": round(times[0], 3)}


def time_paired(fns: list[Callable[[], object]], repeats: int, warmup: int = 3, device="cpu") -> list[list[float]]:
    """Run the functions alternately (so shared-CPU noise hits all alike); per-call ms for each."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            _sync(device)
            times[i].append((time.perf_counter() - t) * 1e3)
    return times


def flop_shares(model: PixelVLA, inputs: dict[str, torch.Tensor]) -> dict[str, object]:
    """FLOPs per top-level module of one forward, and the new modules' share."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs)
    counts = counter.get_flop_counts()
    per = {name: int(sum(counts.get(f"PixelVLA.{name}", {}).values())) for name in TOP_MODULES}
    total = int(sum(counts.get("Global", {}).values()))
    new = sum(per[n] for n in NEW_MODULES)
    return {"total_gflops": round(total / 1e9, 3), "per_module_mflops": {k: round(v / 1e6, 3) for k, v in per.items()},
            "new_modules_share": round(new / total, 6)}


@contextmanager
def _module_timers(model: PixelVLA, acc: dict[str, float]):
    handles, starts = [], {}
    for name in TOP_MODULES:
        mod = getattr(model, name)

        def pre(_m, _a, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _a, _o, name=name):
            acc[name] = acc.get(name, 0.0) + (time.perf_counter() - starts[name]) * 1e3

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def time_shares(model: PixelVLA, inputs, repeats: int) -> dict[str, object]:
    with torch.no_grad():
        model(**inputs)
        acc: dict[str, float] = {}
        with _module_timers(model, acc):
            for _ in range(repeats):
                model(**inputs)
    per = {k: round(v / repeats, 3) for k, v in acc.items()}
    total = sum(acc.values()) / repeats
    return {"per_module_ms": per, "new_modules_share": round(sum(per[n] for n in NEW_MODULES) / total, 6)}


class AutoregressiveBaseline:
    """OpenVLA-style decoding on the same backbone: 7 greedy action tokens, KV cache, lm_head per step."""

    def __init__(self, model: PixelVLA, n_tokens: int = 7):
        self.model, self.n = model, n_tokens
        c = model.config
        self.lm_head = torch.nn.Linear(c.llm_hidden, c.vocab_size, bias=False).to(
            next(model.parameters()).device, next(model.parameters()).dtype)

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        m = self.model
        feats, _ = m.vision(inputs["pixel_values"])
        visual = m.projector(feats)
        emb = m.llm.get_input_embeddings()
        text = emb(inputs["input_ids"])
        x = torch.cat([text[:, :1], visual, text[:, 1:]], 1)  # OpenVLA: [BOS, patches, text]
        out = m.llm(inputs_embeds=x, use_cache=True)
        cache, tokens = out.past_key_values, []
        tok = self.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
        tokens.append(tok)
        for _ in range(self.n - 1):
            out = m.llm(inputs_embeds=emb(tok[:, None]), past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            tok = self.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
            tokens.append(tok)
        return torch.stack(tokens, 1)  # (B, 7) action-token ids (OpenVLA maps them to 256 bins)


def run(presets: list[str], repeats: int, device: str = "cpu", meta_flops: bool = True,
        dtype: torch.dtype = torch.float32) -> dict[str, object]:
    torch.manual_seed(0)
    report: dict[str, object] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": device,
                    "dtype": str(dtype).replace("torch.", "")},
        "inputs": "batch 1: one 224x224 frame, 20-token instruction, one box prompt, a target mask",
        "presets": {},
    }
    for name in presets:
        cfg = PixelVLAConfig.from_preset(name)
        model = PixelVLA(cfg).to(device, dtype).eval()
        x = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in bench_inputs(cfg, device=device).items()}
        ar = AutoregressiveBaseline(model)
        with torch.no_grad():
            cont_t, ar_t = time_paired([lambda: model(**x), lambda: ar(x)], repeats, device=device)
        fwd, arl = _stats(cont_t), _stats(ar_t)
        ratio = statistics.median(a / c for a, c in zip(ar_t, cont_t))
        eager_cfg = PixelVLAConfig.from_preset(name, attn_implementation="eager")
        eager = PixelVLA(eager_cfg).to(device, dtype).eval()
        seq = x["input_ids"].shape[1] + cfg.prefix_tokens
        report["presets"][name] = {
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "sequence_tokens": seq,
            "forward": fwd,
            "flops": flop_shares(eager, x),
            "time": time_shares(model, x, max(3, repeats // 2)),
            "extra_llm_tokens": {"pixel": cfg.pixel_tokens, "prompt_slots": cfg.max_prompts,
                                 "share_of_sequence": round((cfg.pixel_tokens + cfg.max_prompts) / seq, 4)},
            "decoding": {
                "continuous_one_forward": fwd, "autoregressive_7_tokens": arl,
                "speedup_per_call": round(ratio, 2),  # median over paired runs of t_AR / t_continuous
                "actions_per_call": {"continuous": cfg.chunk_size, "autoregressive": 1},
                "speedup_per_action": round(ratio * cfg.chunk_size, 2),
            },
        }
        del model, eager, ar
    if meta_flops:
        cfg = PixelVLAConfig.from_preset("prismatic-7b", attn_implementation="eager")
        x = {k: v.to("meta") for k, v in bench_inputs(cfg).items()}
        with torch.device("meta"):
            big = PixelVLA(cfg).eval()
        report["prismatic-7b_flops_meta"] = {
            "params_b": round(sum(p.numel() for p in big.parameters()) / 1e9, 3),
            "new_module_params_m": {n: round(sum(p.numel() for p in getattr(big, n).parameters()) / 1e6, 2)
                                    for n in NEW_MODULES},
            **flop_shares(big, x)}
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--no-meta-flops", action="store_true", help="skip the prismatic-7b FLOP count on meta")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args.presets, args.repeats, args.device, not args.no_meta_flops, getattr(torch, args.dtype))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
