import orjson

from scripts.utils.formats.run_metrics import find_metrics_file, metrics_summary


def test_a_scripts_metrics_are_found_by_name_or_by_their_numbers_and_summed_up(tmp_path):
    (tmp_path / "output.jsonl").write_text('{"msg": "ours"}\n')
    (tmp_path / "losses.csv").write_text(
        "step,train_loss,val_acc,note\n1,0.9,0.5,a\n2,0.4,0.7,b\n3,0.5,0.6,c\n"
    )
    summary = metrics_summary(tmp_path)
    assert summary["metrics_file"] == "losses.csv" and summary["x"] == "step"
    assert summary["final"] == {"train_loss": 0.5, "val_acc": 0.6}  # "note" is not a number
    assert summary["best"]["train_loss"] == {"value": 0.4, "goal": "min", "at": 2.0}
    assert summary["best"]["val_acc"] == {"value": 0.7, "goal": "max", "at": 2.0}
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.csv").write_text("x\nfoo\n")
    (other / "b.jsonl").write_text(
        "".join(orjson.dumps({"epoch": i, "dice": i / 10}).decode() + "\n" for i in range(3))
    )
    assert find_metrics_file(other).name == "b.jsonl"  # no name says it: the file with numbers
    assert metrics_summary(other, goals={"dice": "max"})["best"]["dice"]["value"] == 0.2


def test_json_histories_of_either_shape_are_read(tmp_path):
    (tmp_path / "results.json").write_text(
        '{"history": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]}'
    )
    assert metrics_summary(tmp_path)["final"] == {"loss": 1.0}
    (tmp_path / "results.json").write_text('{"epoch": [1, 2, 3], "loss": [3.0, 1.0, 2.0]}')
    assert metrics_summary(tmp_path)["best"]["loss"] == {"value": 1.0, "goal": "min", "at": 2.0}
