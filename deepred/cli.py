"""The `deepred` command: redshifts for your own cutouts (`deepred predict`) and model cards (`deepred info`).

Run `deepred predict --help` or `deepred info --help`. The pipeline itself runs with Snakemake (README).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

import yaml

from deepred.contracts.config import ConfigError, load_config
from deepred.contracts.model_json import n_train, weights_sha256
from deepred.contracts.pixels import MAX_ABS_PIXEL
from deepred.core.model_names import ENSEMBLES
from deepred.fetch.pins_cli import add_parser as add_pins_parser

log = logging.getLogger("deepred.cli")

PREDICT_EPILOG = """\
MODEL is a trained model folder (results/models/resnet/des_deep) or its short name resnet/des_deep,
looked up under --results-dir (default: results). Any backbone (resnet, efficientnet, swin, mixer),
neural baseline (photoz, netz, a1, a3), hogsvr, photometry, or an ensemble folder works.

INPUT is one of:
  a folder of FITS cutouts, either
      one file per band:    NGC1234_g.fits NGC1234_r.fits ...   (<id>_<band>.fits; '-' or '.' also work)
      one file per object:  NGC1234.fits with one image HDU per band (band from the FILTER or BAND
                            keyword, or EXTNAME), or one 3-D cube (bands, y, x)
  an .npy cube (N, bands, y, x) in the band order of --bands (default: the model's bands)
  a catalogue (.csv, .parquet or a FITS table) with an id column (object_id, id, objid or name)
      and either a 'file' column (one FITS file per object) or 'file_g', 'file_r', ... columns;
      relative paths are read from the catalogue's folder.

Pixels must be linear calibrated flux, like the survey images the model was trained on; they are
scaled exactly as in training (the method recorded in the model). The cutouts' pixel scale (PIXSCALE,
CD or CDELT keywords, or --pixel-scale) is compared with the training data's; a mismatch is a warning.

OUTPUT (.parquet or .csv): object_id, z_pred, and for PDF models z_mean, z_median, z_mode, z_lo68,
z_hi68 (68%% interval) and with --pdf the PDF on the grid stored in the Parquet metadata key
deepred_pdf_grid (CSV: space-separated values, grid in OUTPUT.provenance.json).
With --format qp (or an OUTPUT named .hdf5) the PDFs are written as a qp ensemble (qp.read(OUTPUT), as
RAIL's estimators write them) with the point estimates as ancillary columns (docs/predict.md).
Objects that cannot be used (not a FITS image, wrong size, NaN pixels, a missing band) are listed
with the reason in OUTPUT's .rejects.csv; the others are still written.

examples:
  deepred predict resnet/des_deep my_cutouts/ -o redshifts.parquet
  deepred predict results/models/photoz/sdss cube.npy --bands u,g,r,i,z --ids ids.txt -o z.csv --pdf
  deepred predict netz/kids targets.csv -o z.parquet --band-map OCAM_g_SDSS=g --pixel-scale 0.213
  deepred predict photoz/sdss my_cutouts/ -o pdfs.hdf5 --format qp
"""

INFO_EPILOG = """\
examples:
  deepred info resnet/des_deep
  deepred info results/models/photoz/sdss --json
  deepred info resnet/des_deep --full-config
"""


def _bands_arg(value: str) -> list[str]:
    bands = [b.strip() for b in value.split(",") if b.strip()]
    if not bands:
        raise argparse.ArgumentTypeError("expected a comma-separated band list, e.g. g,r,i,z")
    return bands


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deepred",
        description="DeepRed: redshifts of galaxies, strong lenses and lensed supernovae from survey images.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results-dir", default=None,
                        help="where the pipeline wrote results/ (default: results_dir of --config, else ./results)")
    common.add_argument("--config", default=None, help="the pipeline's config file, to find results_dir")

    p = sub.add_parser("predict", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="redshifts for your own cutouts with a trained model",
                       description="Estimate redshifts for your own cutouts with a model the pipeline trained.",
                       epilog=PREDICT_EPILOG)
    p.add_argument("model", metavar="MODEL", help="model folder or {model}/{dataset}, e.g. resnet/des_deep")
    p.add_argument("input", metavar="INPUT", help="FITS folder, .npy cube, or catalogue (.csv/.parquet/FITS table)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output table (.parquet or .csv) or qp ensemble (.hdf5)")
    p.add_argument("--format", choices=("parquet", "csv", "qp"), default=None,
                   help="output format (default: from OUTPUT); qp: the PDFs as a qp ensemble (PDF models only)")
    p.add_argument("--pdf", action="store_true", help="also write the full redshift PDF (PDF models only)")
    p.add_argument("--bands", type=_bands_arg, default=None, metavar="B1,B2,..",
                   help="band order of an .npy cube, of a 3-D FITS cube, or of HDUs without band keywords")
    p.add_argument("--band-map", action="append", default=[], metavar="VALUE=BAND",
                   help="map a FILTER/BAND header value (or file-name token) to a model band; repeatable")
    p.add_argument("--pixel-scale", type=_positive_float, default=None, metavar="ARCSEC",
                   help="pixel scale of the inputs in arcsec/px (overrides the FITS headers)")
    p.add_argument("--id-column", default=None, help="catalogue id column (default: object_id, id, objid or name)")
    p.add_argument("--ids", default=None, metavar="FILE", help="object ids of an .npy cube, one per line "
                   "(default: the row number)")
    p.add_argument("--crop", action="store_true", help="center-crop cutouts larger than the model's size")
    p.add_argument("--max-abs-pixel", type=float, default=MAX_ABS_PIXEL, metavar="FLUX",
                   help="reject a cutout with a pixel beyond this |flux| in nanomaggies (default %(default)g); "
                        "blank, constant and non-finite bands are always rejected")
    p.add_argument("--rejects", default=None, metavar="FILE", help="rejects CSV (default: OUTPUT stem + .rejects.csv)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="cutouts per forward pass (default 256)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)

    i = sub.add_parser("info", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="print a trained model's card",
                       description="Print what a trained model was trained on (dataset, bands, cutout, pixel "
                                   "scale), its test metrics, the code version and its configuration.",
                       epilog=INFO_EPILOG)
    i.add_argument("model", metavar="MODEL", help="model folder or {model}/{dataset}, e.g. resnet/des_deep")
    i.add_argument("--json", action="store_true", help="print the card as JSON")
    i.add_argument("--full-config", action="store_true", help="also print the whole resolved pipeline config")
    i.set_defaults(func=cmd_info)

    add_pins_parser(sub)
    return parser


def _results_dir(args) -> Path:
    if args.results_dir:
        return Path(args.results_dir)
    if args.config:
        return Path(load_config(args.config)["results_dir"])
    return Path("results")


def _refuse_to_overwrite(args, model_dir: Path) -> None:
    """-o (and --rejects) must not name a file the command reads: the input, its ids file, or the model's files."""
    # imported here, as in cmd_predict: 255 ms (measured) that the other commands skip
    from deepred.predict.inputs import InferenceError
    from deepred.predict.own_cutouts import rejects_path_for

    read = [Path(args.input)] + ([Path(args.ids)] if args.ids else [])
    read += [p for p in Path(model_dir).iterdir() if p.is_file()]
    rejects = Path(args.rejects) if args.rejects else rejects_path_for(Path(args.output))
    for flag, out in (("-o", Path(args.output)), ("--rejects", rejects)):
        clash = next((p for p in read if p.exists() and out.exists() and out.samefile(p)
                      or out.resolve() == p.resolve()), None)
        if clash is not None:
            raise InferenceError(f"{flag} {out}: that is {clash}, which this command reads; write elsewhere")


def cmd_predict(args) -> int:
    # imported here, not at the top: 255 ms (measured) spared where this is not called
    from deepred.predict.inputs import InferenceError, open_input, parse_band_map
    from deepred.predict.own_cutouts import predict_cutouts
    from deepred.predict.predictor import load_predictor

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictor = load_predictor(args.model, _results_dir(args), device=args.device, batch_size=args.batch_size)
    _refuse_to_overwrite(args, predictor.model_dir)
    log.info("model %s (%s, trained on %s): bands %s, %dx%d px, %s\"/px, scaling %s, head %s, on %s",
             predictor.model_dir, predictor.kind, predictor.dataset, ",".join(predictor.bands), predictor.cutout,
             predictor.cutout, predictor.pixel_scale, predictor.scaling["method"], predictor.head, predictor.device)
    unused: set = set()
    items, total, kind = open_input(args.input, predictor.bands, args.bands, parse_band_map(args.band_map),
                                    args.id_column, args.ids, unused)
    log.info("input %s: %s%s", args.input, kind, f", {total} objects" if total is not None else "")
    summary = predict_cutouts(
        predictor, items, args.output, fmt=args.format, rejects=args.rejects, with_pdf=args.pdf,
        batch_size=args.batch_size, total=total, pixel_scale=args.pixel_scale, crop=args.crop,
        max_abs_pixel=args.max_abs_pixel,
        progress=not args.no_progress,
        provenance_extra={"input": str(args.input), "input_kind": kind, "command": sys.argv},
    )
    if unused:
        log.info("band files not used by this model: %s", ", ".join(sorted(unused)))
    rate = summary.n_ok / summary.seconds if summary.seconds > 0 else float("nan")
    print(f"{summary.n_ok} redshifts -> {summary.output} ({rate:.0f} cutouts/s); "
          f"{summary.n_rejected} rejected -> {summary.rejects}", file=sys.stderr)
    if summary.n_ok == 0:
        raise InferenceError(f"{args.input}: no usable cutouts ({summary.n_rejected} rejected; reasons in "
                             f"{summary.rejects})")
    return 0


def _summary_metrics(results_dir: Path, name: str, dataset: str | None) -> list[dict]:
    """Rows of results/tables/summary.csv about this model (and its training dataset when the table says)."""
    path = results_dir / "tables" / "summary.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("model") == name]
    if dataset:
        ds_keys = ("dataset", "train_dataset")
        same = [r for r in rows if any(r.get(k) == dataset for k in ds_keys)]
        if same or any(k in (rows[0] if rows else {}) for k in ds_keys):
            rows = same
    return rows


def model_card(predictor, results_dir: Path) -> dict:
    """What `deepred info` prints about a loaded model (deepred.predict.predictor.Predictor)."""

    meta, name, dataset = predictor.meta, predictor.name, predictor.dataset
    prov = meta.get("provenance") or {}
    config = meta.get("config") or prov.get("config") or {}
    section = meta.get("architecture")
    if section is None and isinstance(config, dict):
        if name in ENSEMBLES:
            section = config.get("ensemble")
        else:
            section = (config.get("architectures") or {}).get(name) or (config.get("baselines") or {}).get(name)
    table = _summary_metrics(results_dir, name, dataset)
    return {
        "model": name,
        "folder": str(predictor.model_dir),
        "dataset": dataset,
        "bands": predictor.bands,
        "cutout": predictor.cutout,
        "pixel_scale": predictor.pixel_scale,
        "survey": predictor.training_stats.get("survey"),
        "scaling": predictor.scaling["method"],
        "head": predictor.head,
        "n_bins": meta.get("n_bins"),
        "label_column": meta.get("label_column"),
        "n_train": n_train(meta),
        "n_params": meta.get("n_params"),
        "test_metrics": table,
        "test_metrics_source": str(results_dir / "tables" / "summary.csv") if table else None,
        "model_metrics": meta.get("metrics"),
        "code_version": prov.get("code_version"),
        "trained_utc": prov.get("created_utc"),
        "weights_sha256": weights_sha256(meta),
        "model_config": section,
        "training_config": meta.get("training"),
        "seed": meta.get("seed", config.get("seed") if isinstance(config, dict) else None),
        "config": config,
    }


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return "-" if v is None else str(v)


def _metric_lines(rows: list[dict]) -> list[str]:
    """summary.csv's long form (test_set, metric, value, ci_lo, ci_hi, n) as one line per test set."""
    if not rows or not {"test_set", "metric", "value"} <= set(rows[0]):
        return [", ".join(f"{k}={v}" for k, v in r.items() if k != "model") for r in rows]
    by_set: dict[str, list[str]] = {}
    n = {}
    for r in rows:
        ci = f" [{r['ci_lo']}, {r['ci_hi']}]" if r.get("ci_lo") not in (None, "", "nan") else ""
        by_set.setdefault(r["test_set"], []).append(f"{r['metric']} {r['value']}{ci}")
        n[r["test_set"]] = r.get("n")
    return [f"{ts} (n={n[ts]}): " + ", ".join(parts) for ts, parts in by_set.items()]


def _yaml_lines(d: dict, indent: str = "  ") -> list[str]:
    """Nested keys as indented blocks, leaves inline (readable for flat training settings too)."""
    lines = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            lines.append(f"{indent}{k}:")
            lines += _yaml_lines(v, indent + "  ")
        else:
            lines.append(f"{indent}{k}: " + yaml.safe_dump(v, default_flow_style=True, width=10**6).strip()
                         .removesuffix("\n...").removesuffix("..."))
    return lines


def print_card(card: dict, full_config: bool, out=None) -> None:
    w = (out or sys.stdout).write
    w(f"DeepRed model card: {card['model']} trained on {card['dataset']}\n")
    w(f"  {'folder':<16}{card['folder']}\n")
    for label, key in (("dataset", "dataset"), ("survey", "survey"), ("bands", "bands"), ("cutout (px)", "cutout"),
                       ("pixel scale", "pixel_scale"), ("scaling", "scaling"), ("head", "head"),
                       ("redshift bins", "n_bins"), ("target", "label_column"), ("train objects", "n_train"),
                       ("parameters", "n_params"), ("code version", "code_version"), ("trained (UTC)", "trained_utc"),
                       ("weights sha256", "weights_sha256"), ("seed", "seed")):
        if card.get(key) is not None:
            suffix = ' "/px' if key == "pixel_scale" else ""
            w(f"  {label:<16}{_fmt(card[key])}{suffix}\n")
    if card["test_metrics"]:
        w(f"test metrics ({card['test_metrics_source']}):\n")
        for line in _metric_lines(card["test_metrics"]):
            w(f"  {line}\n")
    elif card["model_metrics"]:
        w("metrics (model.json; no results/tables/summary.csv yet):\n")
        w("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in card["model_metrics"].items()) + "\n")
    else:
        w("metrics: none recorded (run the pipeline's tables to get test metrics)\n")
    for label, key in (("model config", "model_config"), ("training config", "training_config")):
        if isinstance(card.get(key), dict) and card[key]:
            w(f"{label}:\n" + "".join(f"{line}\n" for line in _yaml_lines(card[key])))
    if full_config and isinstance(card.get("config"), dict):
        w("pipeline config:\n" + "".join(f"{line}\n" for line in _yaml_lines(card["config"])))


def cmd_info(args) -> int:
    # imported here, not at the top: 359 ms (measured) spared where this is not called
    from deepred.predict.predictor import load_predictor

    results_dir = _results_dir(args)
    card = model_card(load_predictor(args.model, results_dir, device="cpu"), results_dir)
    if args.json:
        if not args.full_config:
            card.pop("config")
        json.dump(card, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print_card(card, args.full_config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="deepred: %(message)s", stream=sys.stderr)
    logging.getLogger("deepred").setLevel(logging.INFO)  # our progress lines, not other libraries' chatter
    from deepred.contracts.processed import DataError
    from deepred.predict.inputs import InferenceError

    try:
        return args.func(args)
    except (InferenceError, DataError, ConfigError, OSError) as exc:  # bad input or destination: named in exc
        if args.debug:
            raise
        print(f"deepred: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else is still one line; --debug shows where it came from
        if args.debug:
            raise
        print(f"deepred: error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepred: interrupted (the output was not written)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
