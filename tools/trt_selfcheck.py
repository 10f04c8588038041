#!/usr/bin/env python3
"""First run on a GPU machine or Jetson: the same check as `asanet-rt doctor` (see asanet_rt.engines.doctor)."""
import argparse
import sys

from asanet_rt.engines.doctor import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plugins", default="auto", choices=("auto", "aot", "v3", "none"))
    parser.add_argument("--dla-core", type=int, default=None)
    parser.add_argument("--onnx", default=None, help="use this --ops plugins export instead of a random small model")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep the test files in DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.exit(main(plugins=args.plugins, dla_core=args.dla_core, keep=args.keep, as_json=args.json, onnx=args.onnx))
