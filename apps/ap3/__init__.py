"""AP3: emulating the ecRad radiation scheme column by column (ECMWF), TensorFlow RNN or 1-D CNN.

Importing the package sets up the environment of TensorFlow, not TensorFlow itself: that
happens in :mod:`.train`, which only the worker running the app imports.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
