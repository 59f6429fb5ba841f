"""`lth analyze speed`: what a ticket buys at inference, measured.

Three (or four) versions of one round's network, all in eval mode under `torch.inference_mode`:

- dense: the unpruned architecture (freshly initialised: a dense kernel's cost does not depend on the values);
- masked: the ticket as lth trains it, the dense architecture with pruned weights set to zero. Dense kernels do
  every multiply, so it costs what dense costs; its nonzero MACs are what an ideal sparse kernel would do;
- compact: the physically smaller dense network of lth.compact (dead units and channels removed), the same
  function as masked;
- 2:4: on a CUDA GPU of compute capability 8.0 or newer only, the masked network's linear layers in fp16 with a
  2:4 pattern imposed on top of the mask (`torch.sparse.to_sparse_semi_structured`) and timed against the same
  network dense in fp16. It is a different function (the 2:4 pattern prunes further); only its speed is of
  interest. Elsewhere it is reported unsupported, with the reason.

For each: parameters and nonzero parameters, MACs per example (what a dense kernel does) and nonzero MACs, the
latency of a batch of 1 and the throughput of a large batch (256), on the CPU and on CUDA when present. Each
timing is the median of repeated calls after warm-up calls; the torch thread count and version are recorded.
`lth analyze speed RUN --round N` saves the result in RUN/analysis/speed_round_NN.json; `lth export --compact`
puts it into the ticket's card.json.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch import nn

from lth.ui import make_console

ANALYSIS_DIR = "analysis"
LATENCY_BATCH = 1
THROUGHPUT_BATCH = 256
_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # lth.models' prunable layers


def sizes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters (all, nonzero) and multiply-accumulates per example (dense, and counting nonzero weights only)
    of a model's linear and conv layers (counted as lth.export.multiply_accumulates does)."""
    macs = multiply_accumulates(model, input_shape)
    weights = dict(model.named_parameters())
    nonzero_macs = sum(count * _nonzero_fraction(weights[name]) for name, count in macs.items())
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "nonzero_parameters": sum(int(p.count_nonzero()) for p in model.parameters()),
        "macs": sum(macs.values()),
        "nonzero_macs": round(nonzero_macs),
    }


def multiply_accumulates(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """lth.export.multiply_accumulates, counted with one real forward pass of a zero example on the CPU (the meta
    device's first use costs seconds; a batch of one costs milliseconds for lth's models)."""
    names = {module: f"{name}.weight" for name, module in model.named_modules() if isinstance(module, _COUNTED)}
    counts: dict[str, int] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        per_example = output.numel() // output.shape[0]
        counts[names[module]] = counts.get(names[module], 0) + per_example * module.weight[0].numel()

    handles = [module.register_forward_hook(hook) for module in names]
    training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return counts


def _nonzero_fraction(weight: torch.Tensor) -> float:
    return int(weight.count_nonzero()) / weight.numel() if weight.numel() else 0.0


def median_seconds(
    model: nn.Module, inputs: torch.Tensor, repeats: int, warmup: int, budget_s: float = 2.0
) -> dict[str, float | int]:
    """Median wall time of one call of `model(inputs)` over up to `repeats` timed calls (at least 3; fewer than
    `repeats` once `budget_s` is spent), after `warmup` untimed calls."""
    cuda = inputs.device.type == "cuda"
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        while len(times) < max(repeats, 3):
            begin = time.perf_counter()
            model(inputs)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - begin)
            if len(times) >= 3 and time.perf_counter() - started > budget_s:
                break
    return {"median_s": statistics.median(times), "calls": len(times)}


def timings(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device,
    repeats: int,
    warmup: int,
    dtype: torch.dtype = torch.float32,
    throughput_batch: int = THROUGHPUT_BATCH,
) -> dict[str, float | int]:
    """Latency (batch 1, milliseconds) and throughput (examples per second at `throughput_batch`)."""
    model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    generator = torch.Generator().manual_seed(0)
    one = torch.randn(LATENCY_BATCH, *input_shape, generator=generator).to(device=device, dtype=dtype)
    many = torch.randn(throughput_batch, *input_shape, generator=generator).to(device=device, dtype=dtype)
    latency = median_seconds(model, one, repeats, warmup)
    throughput = median_seconds(model, many, max(repeats // 4, 3), warmup=max(warmup // 2, 1))
    return {
        "latency_ms": latency["median_s"] * 1e3,
        "latency_calls": latency["calls"],
        "throughput_per_s": throughput_batch / throughput["median_s"],
        "throughput_calls": throughput["calls"],
        "throughput_batch": throughput_batch,
    }


def devices() -> list[torch.device]:
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def benchmark(
    variants: dict[str, nn.Module | None],
    input_shape: tuple[int, ...],
    repeats: int = 40,
    warmup: int = 5,
    throughput_batch: int = THROUGHPUT_BATCH,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Sizes and timings of each named model (None: not available, with its reason in `notes`), plus 2:4 on the
    `masked` model. The machine and torch settings are recorded with them."""
    notes = notes or {}
    result: dict[str, Any] = {
        "machine": machine(),
        "latency_batch": LATENCY_BATCH,
        "throughput_batch": throughput_batch,
        "repeats": repeats,
        "warmup": warmup,
        "timing": "median wall time of repeated calls after warm-up, torch.inference_mode, eval mode",
        "variants": {},
    }
    for name, model in variants.items():
        if model is None:
            result["variants"][name] = {"available": False, "reason": notes.get(name, "not available")}
            continue
        entry: dict[str, Any] = {"available": True, **sizes(model, input_shape)}
        for device in devices():
            entry[device.type] = timings(model, input_shape, device, repeats, warmup, throughput_batch=throughput_batch)
        result["variants"][name] = entry
    masked = variants.get("masked")
    if masked is not None:
        result["variants"]["2:4"] = semi_structured(masked, input_shape, repeats, warmup, throughput_batch)
    return result


def machine() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if cuda else None,
    }


def semi_structured(
    masked: nn.Module, input_shape: tuple[int, ...], repeats: int, warmup: int, throughput_batch: int
) -> dict[str, Any]:
    """2:4 semi-structured sparsity on CUDA (fp16), or why it is unsupported here."""
    if not torch.cuda.is_available():
        return {"available": False, "reason": "unsupported here: 2:4 sparse kernels need a CUDA GPU (none found)"}
    capability = torch.cuda.get_device_capability()
    if capability < (8, 0):
        return {
            "available": False,
            "reason": f"unsupported here: 2:4 sparse kernels need compute capability 8.0+, this GPU has "
            f"{capability[0]}.{capability[1]}",
        }
    try:
        from torch.sparse import to_sparse_semi_structured

        device = torch.device("cuda")
        dense = copy.deepcopy(masked).to(device=device, dtype=torch.half).eval()
        sparse = copy.deepcopy(dense)
        converted = []
        for name, module in sparse.named_modules():
            # the kernels take 2-D weights with both sizes multiples of 64 (CUTLASS) or 32 (cuSPARSELt)
            if isinstance(module, nn.Linear) and module.in_features % 64 == 0 and module.out_features % 64 == 0:
                weight = _two_four(module.weight.detach())
                module.weight = nn.Parameter(to_sparse_semi_structured(weight), requires_grad=False)
                converted.append(name)
        if not converted:
            reason = "unsupported here: no linear layer has both sizes multiples of 64 (2:4 kernels need it)"
            return {"available": False, "reason": reason}
        return {
            "available": True,
            "layers": converted,
            "dtype": "float16",
            "note": "a 2:4 pattern imposed on top of the mask: a different function, timed for speed only",
            "cuda": timings(sparse, input_shape, device, repeats, warmup, torch.half, throughput_batch),
            "cuda_dense_fp16": timings(dense, input_shape, device, repeats, warmup, torch.half, throughput_batch),
        }
    except Exception as error:  # kernels missing in this build, shape limits: say why, do not fail the analysis
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return {"available": False, "reason": f"unsupported here: {type(error).__name__}: {first[:200]}"}


def _two_four(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every 4 consecutive inputs (the 2:4 pattern)."""
    groups = weight.reshape(-1, 4)
    keep = groups.abs().topk(2, dim=1).indices
    pattern = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True)
    return (groups * pattern).reshape(weight.shape).contiguous()


def round_variants(run_dir: Path, round_index: int) -> tuple[dict[str, nn.Module | None], dict[str, Any], Any]:
    """The dense, masked and compact models of a finished round, the compaction's card entry (or the reason it
    cannot be compacted) and the dataset's input shape."""
    from lth import compact, data, models
    from lth.checkpoint import RUN_FILE, finished_round, load_tensors, read_run_record
    from lth.errors import ConfigError
    from lth.structured import from_container

    if not (run_dir / RUN_FILE).is_file():
        raise ConfigError(
            f"{run_dir} is not a run directory (it has no {RUN_FILE}); give one run, not a folder of runs"
        )
    cfg = from_container(read_run_record(run_dir).get("config"), run_dir / RUN_FILE)
    folder = finished_round(run_dir, round_index)
    masks = load_tensors(folder / "mask.safetensors")
    dataset = data.load(cfg.dataset, cfg.seed, torch.device("cpu"))
    torch.manual_seed(cfg.seed)
    dense = models.build(cfg.model, dataset.input_shape, dataset.num_classes).eval()
    masked = copy.deepcopy(dense)
    masked.load_state_dict(load_tensors(folder / "final.safetensors"))
    info: dict[str, Any]
    try:
        result = compact.compact(masked, masks)
        if not result.removed:
            raise ConfigError("no unit is dead, nothing to remove")
        variants = {"dense": dense, "masked": masked.eval(), "compact": result.model}
        info = compact.card_entry(result)
    except ConfigError as error:
        variants = {"dense": dense, "masked": masked.eval(), "compact": None}
        info = {"reason": str(error)}
    return variants, info, dataset.input_shape


def speed(run_dir: Path, round_index: int, repeats: int = 40, warmup: int = 5) -> dict[str, Any]:
    """Benchmark round `round_index` of `run_dir` (see the module docstring); saved in
    RUN/analysis/speed_round_NN.json."""
    from lth.checkpoint import read_json, round_dir, write_json

    variants, info, input_shape = round_variants(run_dir, round_index)
    notes = {"compact": info["reason"]} if "reason" in info else {}
    result = {
        "run": str(run_dir),
        "round": round_index,
        "density": read_json(round_dir(run_dir, round_index) / "metrics.json")["density"],
        "input_shape": list(input_shape),
        **benchmark(variants, tuple(input_shape), repeats, warmup, notes=notes),
    }
    if "reason" not in info:
        result["compact_units"] = info["units"]
    (run_dir / ANALYSIS_DIR).mkdir(exist_ok=True)
    write_json(run_dir / ANALYSIS_DIR / f"speed_round_{round_index:02d}.json", result)
    return result


def table(result: dict[str, Any], title: str) -> Table:
    """The benchmark as a rich table: one row per variant."""
    device_types = [d for d in ("cpu", "cuda") if any(d in v for v in result["variants"].values())]
    table = Table(title=title, title_justify="left")
    for header in ("variant", "parameters", "nonzero", "MACs/example", "nonzero MACs"):
        table.add_column(header, justify="left" if header == "variant" else "right")
    for device in device_types:
        table.add_column(f"{device} latency b={result['latency_batch']} (ms)", justify="right")
        table.add_column(f"{device} throughput b={result['throughput_batch']} (/s)", justify="right")
        table.add_column(f"{device} speedup vs masked", justify="right")
    masked = result["variants"].get("masked", {})
    for name, entry in result["variants"].items():
        if not entry.get("available"):
            table.add_row(f"{name} (n/a, below)", *["-"] * (4 + 3 * len(device_types)))
            continue
        cells = [name]
        cells += [f"{entry[key]:,}" if key in entry else "-" for key in ("parameters", "nonzero_parameters")]
        cells += [f"{entry[key]:,}" if key in entry else "-" for key in ("macs", "nonzero_macs")]
        for device in device_types:
            timing = entry.get(device)
            if timing is None:
                cells += ["-", "-", "-"]
                continue
            base = masked.get(device, {}).get("throughput_per_s")
            speedup = f"{timing['throughput_per_s'] / base:.2f}x" if base else "-"
            cells += [f"{timing['latency_ms']:.3f}", f"{timing['throughput_per_s']:,.0f}", speedup]
        table.add_row(*cells)
    return table


def caption(result: dict[str, Any]) -> str:
    """The machine and timing settings under the table, and why a variant is missing."""
    m = result["machine"]
    where = f"{m['cpu_count']} CPUs" + (f", {m['cuda']}" if m["cuda"] else "")
    lines = [
        f"torch {m['torch']}, {m['threads']} threads, {where}; median of up to {result['repeats']} calls after "
        f"{result['warmup']} warm-up calls"
    ]
    for name, entry in result["variants"].items():
        if not entry.get("available"):
            lines.append(f"{name}: {entry.get('reason', 'not available')}")
        elif name == "2:4":
            lines.append(f"2:4: {entry['note']}; fp16 dense on CUDA: {entry['cuda_dense_fp16']}")
    return "\n".join(lines)


def main_speed(path: Path, round_index: int, as_json: bool = False, repeats: int = 40) -> None:
    result = speed(path, round_index, repeats=repeats)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console = make_console()
    title = f"Inference speed, round {round_index} (density {result['density']:.2%}): {path}"
    console.print(table(result, title))
    console.print(caption(result))
    console.print(f"saved in {ANALYSIS_DIR}/speed_round_{round_index:02d}.json")
