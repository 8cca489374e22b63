"""AP1: post-processing of gridded 2 m temperature forecasts (MET Norway) with a U-Net.

Importing the package sets up the environment of TensorFlow, not TensorFlow itself: that
happens in :mod:`.train`, which only the worker running the app imports.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
