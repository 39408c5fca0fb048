"""Train a linear classifier on scikit-learn's digits, the way its examples do; seeded, so every run
is the same.

python sgd_digits.py --out results
"""

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--out", default="results")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

digits = load_digits()
X_train, X_test, y_train, y_test = train_test_split(
    digits.data / 16.0, digits.target, test_size=0.25, random_state=args.seed
)
model = SGDClassifier(loss="log_loss", max_iter=args.epochs, tol=None, random_state=args.seed)
model.fit(X_train, y_train)
predicted = model.predict(X_test)

out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
with open(out / "metrics.json", "w") as f:
    json.dump(
        {
            "accuracy": float(np.mean(predicted == y_test)),
            "epochs": args.epochs,
            "coef_norm": float(np.abs(model.coef_).sum()),
        },
        f,
        indent=2,
    )
np.savetxt(out / "confusion.csv", confusion_matrix(y_test, predicted), fmt="%d", delimiter=",")
with open(out / "model.pkl", "wb") as f:
    pickle.dump(model, f)
print(f"accuracy {np.mean(predicted == y_test):.3f}")
