"""Thin shim: ``python cli.py fit --config configs/demo.yaml`` = ``lightning-unlearn fit ...``."""

from lightning_unlearn.cli import console_main as main

if __name__ == "__main__":
    main()
