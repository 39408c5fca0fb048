"""Digits with named classes; the label list comes from a set of names, so its order is Python's
hash order."""

import json

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import Perceptron

names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
digits = load_digits()
y_names = [names[t] for t in digits.target]
labels = list(set(y_names))
index = {name: i for i, name in enumerate(labels)}
y = np.array([index[name] for name in y_names])
model = Perceptron(max_iter=20, random_state=0).fit(digits.data, y)

with open("labels.json", "w") as f:
    json.dump({"labels": labels}, f)
np.savez("perceptron.npz", coef=model.coef_, intercept=model.intercept_)
