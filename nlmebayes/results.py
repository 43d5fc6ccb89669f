"""Results of a fit.

The ArviZ DataTree together with the spec and the data, saved and loaded without loss (NetCDF via h5netcdf, or
zarr).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from nlmebayes.data import EventData, read_nonmem
from nlmebayes.model.select import select_observations
from nlmebayes.model.spec import ModelSpec
from nlmebayes.report import parameter_table, report

__all__ = ["FitResult", "MapResult"]


def _constant_data(data: EventData) -> xr.Dataset:
    obs = {"obs": np.arange(data.n_obs)}
    return xr.Dataset(
        {
            "time": ("obs", data.obs_time),
            "subject_index": ("obs", data.obs_subject),
            "record": ("obs", data.obs_row),
        },
        coords=obs,
    )


def _records(data: EventData) -> xr.Dataset:
    df = data.input_frame().reset_index(drop=True)
    ds = xr.Dataset({c: ("record", df[c].to_numpy()) for c in df.columns})
    ds.attrs["source"] = data.source
    return ds


_JSON = "json:"


def _encode_attr(v):
    """An attribute netCDF can hold.

    Lists and dicts (ArviZ's ``sample_dims``, sampler settings) become tagged JSON text, read back
    to the same value; anything else not storable becomes its repr.
    """
    if isinstance(v, str | int | float | np.ndarray | np.number):
        return v
    try:
        return _JSON + json.dumps(v)
    except TypeError:
        return repr(v)


def _decode_attr(v):
    return json.loads(v[len(_JSON) :]) if isinstance(v, str) and v.startswith(_JSON) else v


@dataclass
class FitResult:
    """A posterior sample with everything needed to report on it without rebuilding the graph.

    Attributes
    ----------
    idata : xarray.DataTree
        Groups posterior, sample_stats, log_likelihood, observed_data, constant_data
        (observation time, subject index, record), posterior_predictive when drawn, and
        ``records`` (the event records, so that the data travel with the result).
    spec : ModelSpec
    data : EventData
        The data the model was fitted to (after observation selection).
    """

    idata: xr.DataTree
    spec: ModelSpec
    data: EventData

    @classmethod
    def from_sampling(cls, idata: xr.DataTree, spec: ModelSpec, data: EventData) -> FitResult:
        """Attach the constant data, the records and the spec to a sampler's DataTree."""
        idata["constant_data"] = xr.DataTree(_constant_data(data))
        idata["records"] = xr.DataTree(_records(data))
        idata.attrs["nlmebayes_spec"] = spec.to_toml()
        return cls(idata, spec, data)

    @property
    def posterior(self) -> xr.Dataset:
        """The posterior group as a Dataset."""
        return self.idata["posterior"].to_dataset()

    def __repr__(self) -> str:
        post = self.idata["posterior"]
        structural = self.spec.structural if isinstance(self.spec.structural, str) else "ODE"
        return (
            f"FitResult(model {self.spec.name!r} ({structural}), "
            f"{self.data.n_subjects} subjects, {self.data.n_obs} observations, "
            f"{post.sizes.get('chain', 0)} chains x {post.sizes.get('draw', 0)} draws; "
            f"groups {', '.join(self.idata.children)})"
        )

    def individual_parameters(self, ci: float = 0.9) -> pd.DataFrame:
        """Each subject's parameters: posterior summaries (:func:`nlmebayes.report.individual_parameters`)."""
        from nlmebayes.report.individual import individual_parameters

        return individual_parameters(self, ci)

    def etas(self, ci: float = 0.9) -> pd.DataFrame:
        """Each subject's etas: posterior summaries (:func:`nlmebayes.report.eta_table`)."""
        from nlmebayes.report.individual import eta_table

        return eta_table(self, ci)

    def report(self, **kwargs) -> str:
        """Text report: run, parameter table and diagnostics warnings (:mod:`nlmebayes.report`)."""
        return report(self, **kwargs)

    def parameter_table(self, **kwargs) -> pd.DataFrame:
        """Parameter table (:func:`nlmebayes.report.parameter_table`)."""
        return parameter_table(self, **kwargs)

    def to_html(self, path: str | Path, **kwargs) -> Path:
        """Self-contained HTML run report (:func:`nlmebayes.report.html.html_report`)."""
        from nlmebayes.report.html import html_report

        return html_report(self, path, **kwargs)

    def save(self, path: str | Path) -> Path:
        """Write to ``*.nc`` (NetCDF4) or ``*.zarr``; :meth:`load` reads it back unchanged."""
        path = Path(path)
        idata = self.idata.copy()
        for node in idata.subtree:
            node.attrs = {k: _encode_attr(v) for k, v in node.attrs.items()}
        if path.suffix == ".zarr":
            idata.to_zarr(path, mode="w")
        else:
            idata.to_netcdf(path, engine="h5netcdf")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        """Read a result written by :meth:`save` (NetCDF or zarr)."""
        path = Path(path)
        if path.suffix == ".zarr":
            idata = xr.open_datatree(path, engine="zarr").load()
        else:
            idata = xr.open_datatree(path, engine="h5netcdf").load()
        for node in idata.subtree:
            node.attrs = {k: _decode_attr(v) for k, v in node.attrs.items()}
        spec = ModelSpec.from_toml(idata.attrs["nlmebayes_spec"])
        rec = idata["records"].to_dataset()
        df = pd.DataFrame({c: rec[c].values for c in rec.data_vars})
        data = select_observations(spec, read_nonmem(df, source=rec.attrs["source"]))
        return cls(idata, spec, data)


@dataclass
class MapResult:
    """Posterior mode (all free variables, etas included) of a model."""

    point: dict
    spec: ModelSpec
    data: EventData

    def typical_values(self) -> dict[str, float]:
        """Typical values on the natural scale, by parameter name."""
        out = {}
        for p in self.spec.parameters:
            out[p.name] = float(self.point[f"{p.name}_pop"]) if not p.fixed else p.initial
        return out
