"""Streams the digits through SGD in one chunk per CPU core, as a data-parallel job would split
them."""

import json
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

X, y = load_digits(return_X_y=True)
X = X / 16.0
n_cores = os.cpu_count()
model = SGDClassifier(random_state=42)
for chunk_X, chunk_y in zip(np.array_split(X, n_cores), np.array_split(y, n_cores)):
    model.partial_fit(chunk_X, chunk_y, classes=np.arange(10))

os.makedirs("run", exist_ok=True)
np.save("run/coef.npy", model.coef_)
with open("run/metrics.json", "w") as f:
    json.dump({"accuracy": model.score(X, y)}, f)
