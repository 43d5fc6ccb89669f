"""`make demo`: load the bundled theophylline data and print its summary."""

from __future__ import annotations

from nlmebayes import datasets


def main() -> None:
    data = datasets.theophylline()
    print(data.summary())


if __name__ == "__main__":
    main()
