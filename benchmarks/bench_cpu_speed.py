"""CPU training speed of the default backbones: today's loop against channels-last, torch.compile and bf16 autocast.

    python benchmarks/bench_cpu_speed.py [--config config.yaml] [--dataset des_deep] [--rounds 4] [--steps 2]
        [--models resnet ...] [--variants baseline channels_last compile bf16]
        [--trainer-epochs 3] [--accuracy] [--check-models mixer ...]
        [--out results/benchmarks/cpu_speed.json]

Throughput: optimizer steps (forward, loss, backward, gradient clipping, AdamW), the body of
deepred.training.train.train_one_epoch, of each enabled backbone built as the trainer builds it (build_model, the model's
own batch size, `training.threads` torch threads, deterministic algorithms as configured) on a synthetic batch of
the dataset's shape. The machine may be shared, so the variants are interleaved (A B C D A B C D ...) over
--rounds rounds of --steps steps, each variant's figure is the median over all its steps, ratios are to the
baseline of the same run, and the load averages are recorded before and after. Two clocks: wall time, and the
thread's CPU time (with one torch thread every kernel runs on the calling thread, so CPU time leaves out the time
spent waiting for a core on a loaded machine; it is the figure decisions use).

- baseline: the CPU loop before issue 18 (fp32, contiguous NCHW; `training.cpu_channels_last: false`).
- channels_last: model and batches in torch.channels_last (the default since: `cpu_channels_last: true`).
- compile: torch.compile(net) (inductor on CPU). The first step less one baseline step is the compile time,
  reported apart (wall clock: inductor compiles in worker processes), with the epochs it takes to pay back at the
  measured speed; it counts the training graph only (validation in eval mode compiles another). Inductor's cache
  is a fresh temporary folder: a cold compile, as every job of a fresh clone pays at least once.
- bf16: torch.autocast("cpu", dtype=torch.bfloat16).

A variant more than --drop-factor times slower than the baseline after the first round is not timed again.

Two checks of each (model, variant) more than 10% faster than the baseline (or of every variant of the models
named by --check-models) where the trainer has the variant as an option (SPEED_OPTIONS), on a copy of --dataset
simulated and normalized at the config's size in a temporary folder, the baseline with every option off:
- --trainer-epochs N: N epochs of the package trainer's own loop (deepred.training.train.train_one_epoch: loader,
  augmentation, step), the baseline's and the variant's interleaved epoch by epoch; medians and ratios.
- --accuracy: whole trainings through deepred.training.train.train_model with and without the variant; the test NMADs on
  the same rows with a 95% paired-bootstrap interval of their difference.
"""

from __future__ import annotations

import os
import tempfile

# before torch is imported: a cold inductor cache of our own, never the user's
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="deepred_inductor_"))

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deepred.contracts.config import load_config  # noqa: E402
from deepred.core.io import write_json  # noqa: E402
from deepred.models.registry import build_model  # noqa: E402
from deepred.training.train import training_params  # noqa: E402

VARIANTS = {  # name -> how the step differs from today's CPU loop
    "baseline": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "bf16": {"amp": torch.bfloat16},
}
SPEED_OPTIONS = {"channels_last": {"cpu_channels_last": True}}  # variant -> its `training` keys in deepred.training.train
ADOPT_RATIO = 1.10  # a variant must be this much faster than the baseline to be worth an accuracy check


@dataclass
class Variant:
    """One network in one way of training it; `forward` is the net itself or its torch.compile wrapper."""

    name: str
    net: torch.nn.Module
    forward: object
    opt: torch.optim.Optimizer
    channels_last: bool = False
    amp: torch.dtype | None = None
    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)


def build_variant(name: str, model: str, config: dict, shape: tuple[int, int], device: torch.device,
                  flags: dict) -> Variant:
    """The model as the trainer builds it (same initial weights for every variant), set up for `flags`."""
    params = training_params(model, config)
    torch.manual_seed(0)
    net = build_model(model, config, *shape)
    grid = np.linspace(0.0, 1.0, net.num_outputs) if net.head == "pdf" else None
    net.set_normalization([0.0] * shape[0], [1.0] * shape[0], 0.5, 0.2, grid)
    net.to(device).train()
    if flags.get("channels_last"):
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    forward = torch.compile(net) if flags.get("compile") else net
    return Variant(name, net, forward, opt, bool(flags.get("channels_last")), flags.get("amp"))


def synthetic_batch(batch: int, shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, shape[0], shape[1], shape[1], generator=g)
    z = torch.rand(batch, generator=g)
    return x.to(device), z.to(device)


def train_step(v: Variant, x: torch.Tensor, z: torch.Tensor, grad_clip: float) -> tuple[float, float]:
    """(wall s, thread CPU s) of one optimizer step, as train_one_epoch takes it (the loss outside autocast)."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    t_wall, t_cpu = time.perf_counter(), time.thread_time()
    if v.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=v.amp, enabled=v.amp is not None):
        out = v.forward(x)
    loss = v.net.loss(out, z)
    v.opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(v.net.parameters(), grad_clip)
    v.opt.step()
    if cuda:
        torch.cuda.synchronize()
    if not torch.isfinite(loss):
        raise RuntimeError(f"{v.name}: loss is {loss.item()}")
    return time.perf_counter() - t_wall, time.thread_time() - t_cpu


def _median(values: list) -> float | None:
    return float(np.median(values)) if values else None


def time_model(model: str, config: dict, shape: tuple[int, int], variants: list[str], rounds: int, steps: int,
               drop_factor: float, train_rows: int) -> dict:
    """Interleaved timing of every variant of one model: {variant: record}, figures from the same run."""
    params = training_params(model, config)
    batch, clip, device = int(params["batch_size"]), float(params["grad_clip"]), torch.device("cpu")
    x, z = synthetic_batch(batch, shape, device)
    built = {name: build_variant(name, model, config, shape, device, VARIANTS[name]) for name in variants}
    first = {}
    for name, v in built.items():  # one untimed step each: allocations, oneDNN primitives, compilation
        first[name] = train_step(v, x, z, clip)[0]
    dropped = {}
    for r in range(rounds):
        for name, v in built.items():
            if name in dropped:
                continue
            for _ in range(steps):
                wall, cpu = train_step(v, x, z, clip)
                v.wall.append(wall)
                v.cpu.append(cpu)
        if r == 0:
            base = _median(built["baseline"].cpu)
            dropped = {n: 1 for n, v in built.items() if _median(v.cpu) > drop_factor * base}
    return _records(model, built, first, dropped, batch, params, train_rows)


def _records(model: str, built: dict, first: dict, dropped: dict, batch: int, params: dict, train_rows: int) -> dict:
    base_wall, base_cpu = _median(built["baseline"].wall), _median(built["baseline"].cpu)
    out = {}
    for name, v in built.items():
        wall, cpu = _median(v.wall), _median(v.cpu)
        rec = {"steps_timed": len(v.wall), "step_wall_s": wall, "step_cpu_s": cpu,
               "images_per_s_wall": batch / wall, "images_per_s_cpu": batch / cpu,
               "ratio_wall": base_wall / wall, "ratio_cpu": base_cpu / cpu, "first_step_wall_s": first[name],
               "timed_after_round_1": name not in dropped}
        if name == "compile":
            rec.update(_compile_cost(first[name], base_wall, wall, batch, params, train_rows))
        out[name] = rec
        print(f"{model} {name}: {rec['images_per_s_cpu']:.1f} img/CPU-s ({rec['ratio_cpu']:.2f}x), "
              f"{rec['images_per_s_wall']:.1f} img/s wall ({rec['ratio_wall']:.2f}x), {len(v.wall)} steps", flush=True)
    return out


def _compile_cost(first_wall: float, base_step: float, step: float, batch: int, params: dict,
                  train_rows: int) -> dict:
    """Compile seconds and the epochs that repay them (an epoch: train_rows // batch steps, wall clock)."""
    compile_s = max(first_wall - base_step, 0.0)
    steps_per_epoch = train_rows // batch
    saved = (base_step - step) * steps_per_epoch
    return {"compile_wall_s": compile_s, "steps_per_epoch": steps_per_epoch, "epoch_s_saved": saved,
            "epochs_to_amortise": compile_s / saved if saved > 0 else None,
            "epochs_configured": int(params["epochs"])}



def prepare_dataset(config: dict, dataset: str, work: Path) -> Path:
    """Simulate and normalize `dataset` at the config's size under work (the pipeline's own functions)."""
    from deepred.data.normalize import normalize
    from deepred.contracts.raw import read_simulated
    from deepred.simulate import simulate_dataset

    ds_cfg, processed = config["datasets"][dataset], work / "processed" / dataset
    src = ds_cfg["source"]
    if src["kind"] != "simulate":
        raise SystemExit(f"--dataset {dataset}: source kind {src['kind']!r}; --accuracy needs a simulated one")
    simulate_dataset(preset=src["preset"], n_systems=src["n_systems"], seed=config["seed"], out_dir=work / "raw",
                     bands=ds_cfg["bands"], cutout=ds_cfg["cutout"], class_fractions=src.get("class_fractions"))
    normalize(read_simulated(work / "raw"), dataset, ds_cfg, processed, seed=config["seed"], config=config)
    return processed


def train_and_score(model: str, dataset: str, config: dict, processed: Path, out_dir: Path) -> tuple[dict, dict]:
    """Train through the package trainer: (scores, {"z_pred", "z_true"} of the test split)."""
    from deepred.core.metrics import nmad
    from deepred.predict.splits import predict_model
    from deepred.training.train import train_model

    t0 = time.perf_counter()
    meta = train_model(model, dataset, config, processed, out_dir)
    seconds = time.perf_counter() - t0
    pred = predict_model(out_dir, processed, out_dir / "predictions.parquet", splits=("test",))
    z = {k: pred[k].to_numpy(float) for k in ("z_pred", "z_true")}
    return {"test_nmad": nmad(z["z_pred"], z["z_true"]), "val_nmad": meta["metrics"]["val_nmad"],
            "epochs_run": meta["epochs_run"], "train_seconds": seconds,
            "train_images_per_s": meta["train_images_per_s"]}, z


def paired_nmad_gap(base: dict, other: dict, resamples: int = 1000) -> dict:
    """NMAD(other) - NMAD(base) on the same test rows, with its 95% paired-bootstrap interval."""
    from deepred.core.metrics import nmad

    rng = np.random.default_rng(0)
    n = len(base["z_true"])
    gaps = []
    for _ in range(resamples):
        i = rng.integers(0, n, n)
        gaps.append(nmad(other["z_pred"][i], other["z_true"][i]) - nmad(base["z_pred"][i], base["z_true"][i]))
    lo, hi = np.quantile(gaps, [0.025, 0.975])
    return {"nmad_gap": nmad(other["z_pred"], other["z_true"]) - nmad(base["z_pred"], base["z_true"]),
            "gap_ci95": [float(lo), float(hi)], "n_test": n}


def accuracy_todo(speed: dict, models: list[str] | None) -> dict[str, list[str]]:
    """{model: variants to train}: the named models with every variant the trainer has, else each (model,
    variant) measured more than ADOPT_RATIO faster."""
    if models:
        return {m: [v for v in speed[m] if v in SPEED_OPTIONS] for m in models}
    todo = {m: [v for v, rec in recs.items() if v in SPEED_OPTIONS and rec["ratio_cpu"] > ADOPT_RATIO]
            for m, recs in speed.items()}
    return {m: vs for m, vs in todo.items() if vs}


def variant_configs(config: dict, variants: list[str]) -> dict[str, dict]:
    """{"baseline": the config with every speed option off (today's loop, whatever the config says), variant: the
    baseline with that variant's options on}."""
    base = copy.deepcopy(config)
    for keys in SPEED_OPTIONS.values():
        base["training"].update({k: False for k in keys})
    out = {"baseline": base}
    for v in variants:
        out[v] = copy.deepcopy(base)
        out[v]["training"].update(SPEED_OPTIONS[v])
    return out


def trainer_epochs(todo: dict, config: dict, dataset: str, processed: Path, epochs: int) -> dict:
    """{model: {variant: record}}: the package trainer's own epochs (loader, augmentation, step: train_one_epoch),
    the baseline's and each variant's interleaved epoch by epoch; medians over the epochs and ratios."""
    from deepred.training.train import setup_run, train_one_epoch

    out = {}
    for model, variants in todo.items():
        runs = {v: setup_run(model, dataset, cfg, processed) for v, cfg in variant_configs(config, variants).items()}
        times = {v: [] for v in runs}
        for epoch in range(epochs):
            for v, run in runs.items():
                t_wall, t_cpu = time.perf_counter(), time.thread_time()
                train_one_epoch(run, epoch)
                times[v].append((time.perf_counter() - t_wall, time.thread_time() - t_cpu))
        images = len(runs["baseline"].loader) * int(runs["baseline"].params["batch_size"])  # drop_last batches
        wall = {v: _median([t[0] for t in ts]) for v, ts in times.items()}
        cpu = {v: _median([t[1] for t in ts]) for v, ts in times.items()}
        out[model] = {v: {"epochs": epochs, "images_per_epoch": images, "epoch_wall_s": wall[v], "epoch_cpu_s": cpu[v],
                          "images_per_s_wall": images / wall[v], "images_per_s_cpu": images / cpu[v],
                          "ratio_wall": wall["baseline"] / wall[v], "ratio_cpu": cpu["baseline"] / cpu[v]}
                      for v in runs}
        rates = [f"{v} {r['images_per_s_cpu']:.1f} img/CPU-s ({r['ratio_cpu']:.2f}x)" for v, r in out[model].items()]
        print(f"trainer epochs {model}: {', '.join(rates)}", flush=True)
    return out


def accuracy_checks(todo: dict, config: dict, dataset: str, processed: Path, work: Path) -> dict:
    """{model: {"baseline": scores, variant: scores + its paired NMAD gap to the baseline}}."""
    out = {}
    for model, variants in todo.items():
        cfgs = variant_configs(config, variants)
        scores, base = train_and_score(model, dataset, cfgs["baseline"], processed, work / model / "baseline")
        out[model] = {"baseline": scores}
        for v in variants:
            scores, pred = train_and_score(model, dataset, cfgs[v], processed, work / model / v)
            out[model][v] = {**scores, **paired_nmad_gap(base, pred)}
        print(f"accuracy {model}: {json.dumps(out[model])}", flush=True)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config.yaml"))
    ap.add_argument("--dataset", default="des_deep", help="its (bands, cutout) are timed; the checks train on it")
    ap.add_argument("--models", nargs="*", help="backbones to time (default: every enabled architecture)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (A B C D, A B C D, ...)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    ap.add_argument("--drop-factor", type=float, default=3.0, help="stop timing a variant this much slower")
    ap.add_argument("--trainer-epochs", type=int, default=0, help="interleaved epochs of the package trainer")
    ap.add_argument("--accuracy", action="store_true", help="train with and without the variants; test NMADs")
    ap.add_argument("--check-models", nargs="*", help="models of the two checks (default: a variant > 10%% faster)")
    ap.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "cpu_speed.json"))
    args = ap.parse_args(argv)
    config = load_config(args.config)
    if args.dataset not in config["datasets"]:
        ap.error(f"--dataset {args.dataset}: not in {args.config} (known: {', '.join(config['datasets'])})")
    models = args.models or [a for a, c in config["architectures"].items() if c["enabled"]]
    if set(args.check_models or []) - set(models):
        ap.error(f"--check-models {' '.join(args.check_models)}: only timed models (--models {' '.join(models)})")
    record = time_all(args, config, models)
    if args.accuracy or args.trainer_epochs:
        speeds = {m: {v: r for v, r in recs.items() if isinstance(r, dict)} for m, recs in record["models"].items()}
        todo = accuracy_todo(speeds, args.check_models)
        print(f"checks: {todo or 'nothing (no variant > 10% faster where the trainer has it)'}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_cpu_speed_") as tmp:
            processed = prepare_dataset(config, args.dataset, Path(tmp)) if todo else None
            if args.trainer_epochs and todo:
                record["trainer_epochs"] = trainer_epochs(todo, config, args.dataset, processed, args.trainer_epochs)
                write_json(args.out, record)
            if args.accuracy and todo:
                record["accuracy"] = accuracy_checks(todo, config, args.dataset, processed, Path(tmp))
        record["load_average_after_checks"] = os.getloadavg()
    write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


def time_all(args, config: dict, models: list[str]) -> dict:
    """The interleaved step timings of every model, written to --out after each model."""
    ds_cfg, params = config["datasets"][args.dataset], config["training"]
    torch.set_num_threads(int(params["threads"]))
    if params["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    shape = (len(ds_cfg["bands"]), int(ds_cfg["cutout"]))
    train_rows = int(ds_cfg["source"].get("n_systems", 2000) * ds_cfg["splits"]["train"])
    variants = ["baseline"] + [v for v in args.variants if v != "baseline"]
    record = {"config": args.config, "dataset": args.dataset, "shape": list(shape), "threads": torch.get_num_threads(),
              "deterministic": bool(params["deterministic"]), "rounds": args.rounds, "steps_per_round": args.steps,
              "variants": variants, "torch": torch.__version__, "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
              "load_average_before": os.getloadavg(), "inductor_cache": os.environ["TORCHINDUCTOR_CACHE_DIR"],
              "models": {}}
    t0 = time.perf_counter()
    for m in models:
        record["models"][m] = time_model(m, config, shape, variants, args.rounds, args.steps, args.drop_factor,
                                         train_rows)
        record["models"][m]["batch_size"] = int(training_params(m, config)["batch_size"])
        write_json(args.out, record)  # partial results survive an interrupted run
    record.update(timing_seconds=time.perf_counter() - t0, load_average_after=os.getloadavg())
    return record


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
