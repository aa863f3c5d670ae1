"""Reads pip's ``--dry-run --report`` JSON: exits 1 if the install would replace the stack the
environment already has (TensorFlow, Keras, numpy, protobuf, ml-dtypes), naming what it would
install; prints the plan either way."""

import json
import sys

KEPT = {"tensorflow", "keras", "numpy", "protobuf", "ml-dtypes"}

report = json.load(open(sys.argv[1]))
would = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
         for item in report["install"]}
print("pip would install:", ", ".join(f"{n} {v}" for n, v in sorted(would.items())))
replaced = sorted(KEPT & set(would))
if replaced:
    print(f"FAIL: installing the kit would replace {', '.join(replaced)}", file=sys.stderr)
    sys.exit(1)
print("the installed stack is kept")
