"""Every file pattern of the DAG, spelled once: the rules, the input functions and the table code build paths here.

`Layout(config)` roots the patterns at the config's `data_dir` and `results_dir`. Each method takes the
pattern's parts and returns a path string; a part left at its default is a Snakemake wildcard (`{dataset}`), so
the same method gives a rule's output pattern and, with values, a concrete input file.

Torch-free: rules/common.smk imports it at parse time.
"""

from __future__ import annotations

from deepred.contracts.processed import FEATURES_FILE
from deepred.fetch.layout import ARCHIVES_DIR

# What a simulate job writes into data/raw/{dataset}/ (deepred.simulate.simulate_dataset), in its order.
SIMULATED_FILES = ("images.npy", "masks.npy", "truth.parquet", "meta.json")
# What a `cutouts` source's cut step writes into data/raw/{dataset}/cutouts/ (normalize's inputs).
CUT_FILES = ("truth.parquet", "rejects.parquet", "meta.json")
# What one explain job writes into results/shap/{model}/{dataset}/ (deepred.explain.attributions), and its control.
SHAP_FILES = ("per_image.parquet", "attributions.npy", "regions.npy", "explain.json")
SHAP_OCCLUSION_FILE = "occlusion.parquet"
# The per-test-set metrics files (deepred.results.tables), and the per-test-set figure kinds.
METRIC_KINDS = ("metrics", "nmad", "binned", "calibration")
FIGURE_KINDS = ("density", "nmad_vs_z", "pit")

W = {name: "{" + name + "}" for name in ("dataset", "model", "test_set", "name", "file", "train", "eval")}


class Layout:
    """The DAG's file patterns under one config's data and results folders."""

    def __init__(self, config: dict):
        self.data = str(config["data_dir"])
        self.results = str(config["results_dir"])

    # -- data -------------------------------------------------------------------------------------------------
    def raw(self, dataset: str = W["dataset"], name: str = W["name"]) -> str:
        return f"{self.data}/raw/{dataset}/{name}"

    def archive_download(self, archive: str = "{archive}", file: str = W["file"]) -> str:
        """An archive shared by datasets: data/raw/_archives/{archive id}/{file} (deepred.fetch.layout)."""
        return f"{self.data}/raw/{ARCHIVES_DIR}/{archive}/{file}"

    def processed(self, dataset: str = W["dataset"], name: str = "catalog.parquet") -> str:
        """A processed dataset's file (`name=""`: its folder, with a trailing slash)."""
        return f"{self.data}/processed/{dataset}/{name}"

    def processed_dir(self, dataset: str = W["dataset"]) -> str:
        return f"{self.data}/processed/{dataset}"

    def features(self, dataset: str = W["dataset"]) -> str:
        """A processed dataset's photometric features (deepred.features.table), beside its catalogue."""
        return self.processed(dataset, FEATURES_FILE)

    # -- models and predictions -------------------------------------------------------------------------------
    def model_dir(self, model: str = W["model"], dataset: str = W["dataset"]) -> str:
        return f"{self.results}/models/{model}/{dataset}"

    def model_file(self, name: str, model: str = W["model"], dataset: str = W["dataset"]) -> str:
        return f"{self.model_dir(model, dataset)}/{name}"

    def predictions(self, model: str = W["model"], dataset: str = W["dataset"]) -> str:
        return f"{self.results}/predictions/{model}/{dataset}.parquet"

    def transfer(self, model: str = W["model"], train: str = W["train"], eval: str = W["eval"]) -> str:
        return f"{self.results}/transfer/{model}/{train}__{eval}.parquet"

    # -- SHAP -------------------------------------------------------------------------------------------------
    def shap_dir(self, model: str = W["model"], dataset: str = W["dataset"], shuffled: bool = False) -> str:
        return f"{self.results}/shap/{model}/{dataset}" + ("/shuffled" if shuffled else "")

    def shap_file(self, name: str, model: str = W["model"], dataset: str = W["dataset"],
                  shuffled: bool = False) -> str:
        return f"{self.shap_dir(model, dataset, shuffled)}/{name}"

    def shap_figure(self, name: str, test_set: str = W["test_set"]) -> str:
        return f"{self.results}/figures/shap/{test_set}/{name}.png"

    # -- metrics, tables, figures, PDFs, archive --------------------------------------------------------------
    def metrics(self, kind: str, test_set: str = W["test_set"]) -> str:
        return f"{self.results}/metrics/{test_set}/{kind}.csv"

    def table(self, name: str, suffix: str = ".csv") -> str:
        return f"{self.results}/tables/{name}{suffix}"

    def figure(self, name: str, suffix: str = ".png") -> str:
        """A figure by name: `improvement`, `transfer_nmad`, or `<kind>/<test set>` (FIGURE_KINDS)."""
        return f"{self.results}/figures/{name}{suffix}"

    def pdfs(self, model: str = W["model"], test_set: str = W["test_set"]) -> str:
        return f"{self.results}/pdfs/{model}/{test_set}.hdf5"

    def archive(self, date: str) -> str:
        return f"{self.results}/archive/deepred-results-{date}.tar.gz"

    def scale_point(self, name: str, dataset: str = W["dataset"], model: str = W["model"], n="{n}") -> str:
        """A scale-study point's file: results/scale_study/{dataset}/{model}/n{n}/{name}."""
        return f"{self.results}/scale_study/{dataset}/{model}/n{n}/{name}"

    def benchmark(self, rule: str, *parts: str) -> str:
        """The rule's benchmark file, one per job: results/benchmarks/<rule>/<wildcards>.tsv."""
        return f"{self.benchmark_dir()}/{rule}/" + "/".join(parts) + ".tsv"

    def benchmark_dir(self) -> str:
        """Where the jobs' benchmark files and the scheduler's record (deepred.results.runtime) go."""
        return f"{self.results}/benchmarks"
