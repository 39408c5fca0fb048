"""Naive Bayes on the digits; the model file is named after the day and time it was trained."""

import pickle
import time
from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.naive_bayes import MultinomialNB

run = time.strftime("%Y%m%d-%H%M%S")
X, y = load_digits(return_X_y=True)
model = MultinomialNB(alpha=0.5).fit(X, y)
folder = Path("checkpoints")
folder.mkdir(exist_ok=True)
with open(folder / f"nb_{run}.pkl", "wb") as f:
    pickle.dump(model, f)
(folder / "accuracy.txt").write_text(f"{model.score(X, y):.4f}\n")
