#!/usr/bin/env python
"""Entry point: `python main.py {fit,validate,test,predict} --config configs/cifar.yaml [--key value ...]`."""

from project.cli import main

if __name__ == "__main__":
    main()
