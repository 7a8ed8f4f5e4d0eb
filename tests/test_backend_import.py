"""Importing the engine leaves TensorFlow's runtime unstarted: a program (benchmarks/peers.py,
a user's script) can still set its thread counts after `import keras_landscape...`."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_engine_does_not_start_tensorflow():
    code = (
        "import keras_landscape.engine.landscape\n"
        "import tensorflow as tf\n"
        "tf.config.threading.set_intra_op_parallelism_threads(1)\n"
        "tf.config.threading.set_inter_op_parallelism_threads(1)\n"
        "print('threads set')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "threads set" in done.stdout
