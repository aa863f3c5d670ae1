"""Train a small DropBlock model under XLA with the rate schedule, save it, verify its export.

The whole workflow in one script:

1. build a reference model from :mod:`tfdropblock.models` at a small size;
2. train it for a few steps on generated data with ``compile(..., jit_compile=True)`` (the
   only way to get XLA on CPU: ``"auto"`` resolves to False there) while
   :class:`tfdropblock.DropBlockScheduler` ramps the drop rate linearly, as the paper does;
3. save it as ``.keras``;
4. run ``tfdropblock verify MODEL.keras``, which exports SavedModel, TFLite and ONNX and checks
   that every DropBlock layer folded away (no random op, outputs equal Keras inference).

Usage::

    python examples/train_and_verify.py                      # ResNet-50 layout, 20 steps
    python examples/train_and_verify.py --model mobilenet_v2 --steps 50 --out /tmp/mnv2.keras
    python examples/train_and_verify.py --no-verify          # train and save only

The exit status is the verifier's (0: every format passed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# name: (builder keyword arguments, input shape); all small enough to train in seconds on CPU.
MODELS = {
    "resnet50": dict(input_shape=(32, 32, 3), width=8, blocks_per_stage=(1, 1, 2, 1)),
    "mobilenet_v2": dict(input_shape=(32, 32, 3), alpha=0.35, repeats=(1, 1, 1, 2, 1, 1, 1)),
    "sequence": dict(input_shape=(256, 1), width=8, blocks_per_stage=(1, 1, 1, 1)),
    "volume": dict(input_shape=(8, 32, 32, 1), width=8, blocks_per_stage=(1, 1, 1, 1)),
}
NUM_CLASSES = 4


def build(name, seed):
    from tfdropblock import models

    builder = {"resnet50": models.resnet50_dropblock,
               "mobilenet_v2": models.mobilenet_v2_dropblock,
               "sequence": models.sequence_dropblock,
               "volume": models.volume_dropblock}[name]
    return builder(num_classes=NUM_CLASSES, rate=0.1, seed=seed, **MODELS[name])


def make_data(input_shape, samples, seed):
    """A learnable toy task: noise, plus a bright band whose position along the first spatial
    axis (time, height or depth) is the class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (samples, *input_shape)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, samples)
    band = input_shape[0] // NUM_CLASSES
    for i, label in enumerate(y):
        x[i, label * band:(label + 1) * band] += 2.0
    return x, y


def verify_command(model_path):
    """``tfdropblock verify MODEL``: the installed console script, else ``python -m``."""
    script = os.path.join(os.path.dirname(sys.executable), "tfdropblock")
    if not os.path.exists(script):
        script = shutil.which("tfdropblock")
    if script:
        return [script, "verify", model_path]
    return [sys.executable, "-m", "tfdropblock.cli", "verify", model_path]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet50")
    parser.add_argument("--steps", type=int, default=20, help="training steps (20)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (16)")
    parser.add_argument("--ramp-steps", type=int, default=None,
                        help="steps for the rate to reach its target (default: all of them)")
    parser.add_argument("--out", default=None, metavar="MODEL.keras",
                        help="where to save the model (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", action="store_true", help="skip tfdropblock verify")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1")

    import keras

    from tfdropblock import DropBlockScheduler, dropblock_layers

    keras.utils.set_random_seed(args.seed)
    model = build(args.model, args.seed)
    x, y = make_data(MODELS[args.model]["input_shape"], args.steps * args.batch_size, args.seed)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=True)
    scheduler = DropBlockScheduler(ramp_steps=args.ramp_steps or args.steps)
    print(f"training {model.name} ({model.count_params():,} weights, "
          f"{len(dropblock_layers(model))} DropBlock layers) for {args.steps} steps under XLA")
    history = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=2,
                        callbacks=[scheduler])
    rates = sorted({round(float(layer.current_rate.numpy()), 6)
                    for layer in dropblock_layers(model)})
    print(f"loss {history.history['loss'][-1]:.4f}; DropBlock rates at the last step {rates}")

    out = args.out or os.path.join(tempfile.mkdtemp(prefix="tfdropblock_example_"),
                                   f"{args.model}.keras")
    model.save(out)
    print(f"saved {out}")
    if args.no_verify:
        return 0
    command = verify_command(out)
    print("running:", " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
