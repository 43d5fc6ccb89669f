"""`make demo`: fit the bundled theophylline model with NUTS and print the report."""

from __future__ import annotations

from pathlib import Path

from nlmebayes import ModelSpec, datasets, fit


def model_path(name: str) -> Path:
    """A model of the library in ``models/`` (repository checkout)."""
    return Path(__file__).resolve().parents[1] / "models" / f"{name}.toml"


def main() -> None:
    """Fit the theophylline model (4 chains x 1000 draws, seed 2026) and print the report."""
    data = datasets.theophylline()
    print(data.summary())
    print()
    spec = ModelSpec.from_toml(model_path("theophylline_1cpt_oral"))
    print(f"Fitting {spec.name} ({spec.structural}) with nutpie: 4 chains x 1000 draws ...")
    result = fit(spec, data, draws=1000, tune=1000, chains=4, seed=2026)
    print()
    print(result.report())


if __name__ == "__main__":
    main()
