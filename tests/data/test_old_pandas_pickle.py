"""The DeepGraviLens metadata reader on metadata pickles really written by pandas 1.x / numpy 1.x.

tests/realformats.py imitates the archive's old pickles (a stand-in class renamed to Int64Index in the bytes);
the files here were written by the old libraries themselves (tests/fixtures/make_old_pandas_pickle.py, run in a
throwaway pandas 1.4.3 / numpy 1.22.4 and pandas 1.1.5 / numpy 1.19.5 environment; each sidecar .json records
the versions, the sha256 and the redshifts the writer put in). The sha256 is pinned here too, so a fixture
regenerated with another pandas (its sidecar along with it) fails instead of passing silently.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepred.data.readers.deepgravilens import LENS_KEY, SOURCE_KEY, load_metadata_pickle, read_deepgravilens
from deepred.fetch.download import pin_folder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# stem -> sha256 of the bytes the old pandas wrote (also in the sidecar; pinned here so both can't drift together)
PINNED = {
    "dgl_mds_pandas1": "82f10e6aed197eb90c28875a04c347673895749c14f2d0f5b123748f53a9c418",  # pandas 1.4.3, numpy 1.22.4
    "dgl_mds_pandas1_1": "719258b2cfe5e6e215faf2884d5a8b9713f04e7d6bfb1775d3aa31a021c8c55e",  # pandas 1.1.5, numpy 1.19.5
}
STEMS = sorted(PINNED)


def _fixture(stem: str) -> tuple[bytes, dict]:
    return (FIXTURES / f"{stem}.npy").read_bytes(), json.loads((FIXTURES / f"{stem}.json").read_text())


def _expected(side: dict, keys) -> tuple[np.ndarray, np.ndarray]:
    exp = side["expected"]
    return (np.array([exp[str(k)]["z_lens"] for k in keys]), np.array([exp[str(k)]["z_source"] for k in keys]))


@pytest.mark.parametrize("stem", STEMS)
def test_old_pandas_fixture_is_the_pinned_pandas1_pickle(stem):
    data, side = _fixture(stem)
    digest = hashlib.sha256(data).hexdigest()
    assert digest == PINNED[stem] == side["sha256"], "fixture regenerated? only with pandas 1.x (see its script)"
    assert len(data) == side["size"]
    assert side["written_with"]["pandas"].startswith("1.") and side["written_with"]["numpy"].startswith("1.")
    # The class paths pandas 1.x / numpy 1.x wrote (protocol-3 GLOBAL opcodes), gone from pandas 3 / numpy 2.
    assert b"cpandas.core.indexes.numeric\nInt64Index\n" in data
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data


@pytest.mark.parametrize("stem", STEMS)
def test_load_metadata_pickle_reads_real_pandas1_pickle(stem):
    data, side = _fixture(stem)
    meta = load_metadata_pickle(data, f"{stem}.npy")
    assert sorted(meta) == list(range(side["n_rows"]))
    for key, df in meta.items():
        exp = side["expected"][str(key)]
        assert isinstance(df, pd.DataFrame) and len(df) == side["epochs"]
        assert list(df.columns) == side["columns"]
        assert {c: str(t) for c, t in df.dtypes.items()} == side["dtypes"]
        # pandas 1.x Int64Index comes back as an int64 Index, RangeIndex as RangeIndex
        if exp["index"] == "RangeIndex":
            assert isinstance(df.index, pd.RangeIndex)
        else:
            assert exp["index"] == "Int64Index" and df.index.dtype == np.int64
        for b in "griz":
            np.testing.assert_array_equal(df[f"PLANE_1-REDSHIFT-{b}"].to_numpy(), exp["z_lens"])
            np.testing.assert_array_equal(df[f"PLANE_2-REDSHIFT-{b}"].to_numpy(), exp["z_source"])
        assert (df["CONFIGURATION_LABEL-g"] == "CONFIGURATION_1").all()
    z_lens, z_src = _expected(side, sorted(meta))
    assert np.array_equal([meta[k][LENS_KEY].iloc[0] for k in sorted(meta)], z_lens)
    assert np.array_equal([meta[k][SOURCE_KEY].iloc[0] for k in sorted(meta)], z_src)


@pytest.mark.parametrize("stem", STEMS)
def test_plain_unpickling_of_the_old_pickle_fails_without_the_compat_unpickler(stem):
    """The fixture really needs the reader's compatibility layer: pandas 3 has no Int64Index module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy 2's numpy.core shim warns before pandas fails
        with pytest.raises(ImportError, match="pandas.core.indexes.numeric"):
            np.load(FIXTURES / f"{stem}.npy", allow_pickle=True)


@pytest.mark.parametrize("stem", STEMS)
def test_read_deepgravilens_on_real_pandas1_pickle(tmp_path, stem):
    """The whole reader on a subset folder whose GROUP_1_mds_14.npy is the real old pickle."""
    side = _fixture(stem)[1]
    raw = tmp_path / "des_deep_data"
    raw.mkdir()
    n = side["n_rows"]
    rng = np.random.default_rng(0)
    np.save(raw / "GROUP_1_ims_14.npy", rng.normal(0, 1, (n, 4 * 45 * 45)).astype(np.float32))
    np.save(raw / "GROUP_1_lcs_14.npy", rng.normal(20, 1, (n, 14, 4)).astype(np.float32))
    shutil.copyfile(FIXTURES / f"{stem}.npy", raw / "GROUP_1_mds_14.npy")
    src = {"kind": "deepgravilens", "subset": "des_deep_data", "files": pin_folder(raw), "group_classes": ["gg_lens"]}
    rs = read_deepgravilens(raw, src, "des_deep")
    assert rs.n_objects == n and rs.bands == ["g", "r", "i", "z"] and rs.survey == "DES-deep"
    truth = pd.concat([c.truth for c in rs.chunks(10)], ignore_index=True)
    rows = truth["object_id"].str[-7:].astype(int).to_numpy()
    assert list(rows) == list(range(n))
    z_lens, z_src = _expected(side, rows)
    np.testing.assert_array_equal(truth["z_lens_raw"].to_numpy(), z_lens)
    np.testing.assert_array_equal(truth["z_source_raw"].to_numpy(), z_src)
    np.testing.assert_array_equal(truth["z_lens"].to_numpy(), z_lens)  # none of them is a placeholder
    # Copies of a system share one system_id, whatever their index kind (the reset-index copy included).
    system = np.array([side["expected"][str(r)]["system"] for r in rows])
    assert truth.groupby("system_id").size().tolist() == [side["copies"]] * side["n_systems"]
    assert (pd.Series(system).groupby(truth["system_id"].to_numpy()).nunique() == 1).all()
