"""Export: hand-checked pairs/margins/weights from comparisons, ratings and rankings; files that the data
layer loads and validates; atomic writes; option errors; and a reward model trained on the export that
really uses the weight column."""

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from rlhfkit.data import detect_format, load_records, to_preference_pairs, validate
from rlhfkit.feedback import calibrate_ratings
from rlhfkit.feedback.dawid_skene import pair_dawid_skene
from rlhfkit.feedback.export import export, export_rows, rating_noise_variances, write_jsonl
from rlhfkit.feedback.records import FeedbackData, PairObs, RankingObs, RatingObs, ResponseRec

TEXTS = {1: "rock song night", 2: "waits sleeps reads", 3: "walks reads", 4: "rock waits",
         5: "song rock walks", 6: "sleeps waits", 7: "night rock song"}


def project():
    """Prompt 0: responses 1-4 (comparisons, rankings); prompt 1: responses 5-7 (a gold comparison, ratings)."""
    responses = {i: ResponseRec(i, 0 if i <= 4 else 1, f"the band {0 if i <= 4 else 1} ", t) for i, t in TEXTS.items()}
    pairs = [PairObs(1, 1, 2, "x", "a", 1, strength=3), PairObs(1, 1, 2, "y", "a", 2, strength=1),
             PairObs(1, 1, 2, "z", "b", 1, strength=2),
             PairObs(2, 3, 4, "x", "tie", 3), PairObs(2, 3, 4, "y", "tie", 4), PairObs(2, 3, 4, "z", "a", 3),
             PairObs(3, 5, 6, "z", "a", 6, is_gold=True, gold_winner="b")]
    ratings = [RatingObs(4, 5, "x", 3), RatingObs(4, 6, "x", 1), RatingObs(4, 7, "x", 3)]
    rankings = [RankingObs(5, (1, 2, 3), (3, 2, 1), "x"), RankingObs(6, (1, 3, 2), (1, 2, 3), "y")]
    return FeedbackData("demo", (1, 3), responses, ratings, pairs, rankings)


def key(row):
    return row["source"], row["chosen"], row["rejected"]


def test_pairs_margins_and_weights_by_hand():
    data = project()
    rows = export_rows(data)
    pairs = {key(r): r for r in rows["pairs"]}
    ds = pair_dawid_skene(data)
    post = ds.posteriors[(1, 2)]
    assert post["a"] > post["b"]
    # comparisons: (1, 2) won by 1; margin = 1/3 * mean strength of the two "a" votes (3, 1) = 2/3
    assert pairs["comparison", TEXTS[1], TEXTS[2]] == {
        "prompt": "the band 0 ", "chosen": TEXTS[1], "rejected": TEXTS[2], "margin": pytest.approx(2 / 3),
        "weight": pytest.approx(post["a"] - post["b"]), "source": "comparison", "n": 3}
    # (3, 4): "tie" most probable -> dropped; (5, 6): gold says b, so 6 wins with certainty despite z's vote
    assert not any(r["source"] == "comparison" and {r["chosen"], r["rejected"]} == {TEXTS[3], TEXTS[4]}
                   for r in rows["pairs"])
    gold = pairs["comparison", TEXTS[6], TEXTS[5]]
    assert gold["weight"] == 1.0 and gold["margin"] == 0.0
    # ratings (one annotator: scores as given): 5 > 6 and 7 > 6 by 2 points, 5 = 7 makes no pair.
    # No response rated twice -> noise = rating_noise^2 = 0.25 per rating; sd of the gap = sqrt(0.5);
    # weight = 2 Phi(2 / sqrt(0.5)) - 1 = erf(2)
    for better in (5, 7):
        row = pairs["rating", TEXTS[better], TEXTS[6]]
        assert row["margin"] == pytest.approx(2.0) and row["weight"] == pytest.approx(math.erf(2.0), rel=1e-9)
        assert row["n"] == 2
    # rankings (1,2,3) and (1,3,2): 1 beats 2 and 3 in both (weight 1), 2 vs 3 split -> dropped
    assert pairs["ranking", TEXTS[1], TEXTS[2]]["weight"] == 1.0
    assert pairs["ranking", TEXTS[1], TEXTS[3]]["n"] == 2
    assert {k for k in pairs if k[0] == "ranking"} == {("ranking", TEXTS[1], TEXTS[2]), ("ranking", TEXTS[1], TEXTS[3])}
    assert len(rows["pairs"]) == 6
    # consensus ranking: mean positions 1: 0, 2: 1.5, 3: 1.5 -> tie broken by id
    assert rows["rankings"] == [{"prompt": "the band 0 ", "responses": [TEXTS[1], TEXTS[2], TEXTS[3]], "n": 2}]
    assert rows["ratings"] == [{"prompt": "the band 1 ", "response": TEXTS[i], "score": pytest.approx(s),
                                "raw_mean": s, "n": 1} for i, s in ((5, 3.0), (6, 1.0), (7, 3.0))]


def test_weight_none_min_weight_and_sources():
    data = project()
    plain = export_rows(data, weight="none")["pairs"]
    assert len(plain) == 6 and {r["weight"] for r in plain} == {1.0}
    strict = export_rows(data, min_weight=0.999)["pairs"]
    assert {r["source"] for r in strict} == {"comparison", "ranking"}  # erf(2) = 0.9953 falls below
    only = export_rows(data, sources=["rating"])["pairs"]
    assert {r["source"] for r in only} == {"rating"}
    wide = export_rows(data, min_gap=2.5)["pairs"]
    assert not any(r["source"] == "rating" for r in wide)


def test_rating_noise_hand_case_and_more_annotators_mean_more_weight():
    # response 1: p=3, q=1; response 2: p=2, q=2. Without shrinkage: scores 2, 2, offsets +-0.5,
    # residuals +-0.5; each squared residual x n/(n-1) = 2 -> SS_p = SS_q = 1 over 2 ratings.
    responses = {i: ResponseRec(i, 0, "p ", TEXTS[i]) for i in (1, 2)}
    data = FeedbackData("n", responses=responses, ratings=[RatingObs(1, 1, "p", 3), RatingObs(1, 1, "q", 1),
                                                          RatingObs(2, 2, "p", 2), RatingObs(2, 2, "q", 2)])
    cal = calibrate_ratings([(o.response_id, o.annotator, o.score) for o in data.ratings], shrinkage=0.0, tol=1e-12)
    assert rating_noise_variances(data, cal, 0.0, 0.5) == pytest.approx({"p": 0.5, "q": 0.5})
    # shrinkage 2: project = (2 + 2 * 0.25) / (4 + 2); annotator = (1 + 2 * project) / (2 + 2)
    project_var = 2.5 / 6
    assert rating_noise_variances(data, cal, 2.0, 0.5) == pytest.approx({a: (1 + 2 * project_var) / 4 for a in "pq"})

    def weight(raters):
        ratings = [RatingObs(1, rid, a, score) for a in raters for rid, score in ((1, 3), (2, 2))]
        return export_rows(FeedbackData("w", responses=responses, ratings=ratings))["pairs"][0]["weight"]
    assert weight(["p", "q", "r"]) > weight(["p"]) > 0


def test_files_load_and_validate_with_the_data_layer(tmp_path):
    paths = export(project(), tmp_path / "out")
    assert set(paths) == {"pairs", "ratings", "rankings"}
    expected = {"pairs": "preference", "ratings": "ratings", "rankings": "rankings"}
    for name, path in paths.items():
        assert path == tmp_path / "out" / f"{name}.jsonl"
        records = load_records(str(path))
        fmt = detect_format(records)
        assert fmt == expected[name]
        validate(records, fmt)
        assert len(to_preference_pairs(records, fmt)) > 0
    pairs = to_preference_pairs(load_records(str(paths["pairs"])))
    rows = [json.loads(line) for line in paths["pairs"].read_text().splitlines()]
    assert pairs["weight"] == pytest.approx([r["weight"] for r in rows])
    assert pairs["margin"] == pytest.approx([r["margin"] for r in rows])
    assert pairs["prompt"] == [r["prompt"] for r in rows] and pairs["chosen"] == [r["chosen"] for r in rows]
    assert sorted(os.listdir(tmp_path / "out")) == ["pairs.jsonl", "rankings.jsonl", "ratings.jsonl"]
    assert oct(paths["pairs"].stat().st_mode & 0o777) == "0o644"


def test_only_nonempty_files_and_clear_errors(tmp_path):
    data = project()
    comparisons_only = FeedbackData("c", responses=data.responses, pairs=data.pairs)
    assert set(export(comparisons_only, tmp_path)) == {"pairs"}
    with pytest.raises(ValueError, match="nothing to export from project 'empty'"):
        export(FeedbackData("empty"), tmp_path / "e")
    with pytest.raises(ValueError, match="weight one of"):
        export_rows(data, weight="votes")
    with pytest.raises(ValueError, match="sources must be among"):
        export_rows(data, sources=["pairs"])
    missing = FeedbackData("m", responses={}, pairs=data.pairs[:1])
    with pytest.raises(ValueError, match="response 1 is judged but missing"):
        export_rows(missing)


def test_write_is_atomic(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"a": 1}])
    write_jsonl(path, [{"a": 2}, {"a": 3}])
    assert path.read_text() == '{"a": 2}\n{"a": 3}\n'
    with pytest.raises(TypeError):
        write_jsonl(path, [{"a": 4}, {"a": object()}])  # fails halfway through
    assert path.read_text() == '{"a": 2}\n{"a": 3}\n'  # the old file is untouched
    assert os.listdir(tmp_path) == ["pairs.jsonl"]  # and no temporary file is left


def test_reward_model_trains_on_the_export_and_uses_the_weights(tokenizer, tmp_path):
    from rlhfkit import RewardConfig, RewardTrainer
    from rlhfkit.testing import tiny_reward_model

    path = export(project(), tmp_path / "export")["pairs"]
    args = RewardConfig(output_dir=str(tmp_path / "rm"), max_steps=2, per_device_train_batch_size=4,
                        learning_rate=1e-3, logging_steps=1, report_to="jsonl", disable_tqdm=True, max_length=32)
    trainer = RewardTrainer(model=tiny_reward_model("gpt2", tokenizer, hidden_size=32), args=args,
                            train_dataset=str(path), processing_class=tokenizer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.train()
    assert all(math.isfinite(r["loss"]) for r in history if "loss" in r)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))

    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.loop.collate_fn(rows)
    weights = torch.tensor([json.loads(line)["weight"] for line in path.read_text().splitlines()])
    assert batch["weight"] == pytest.approx(weights.tolist())
    assert len(set(weights.tolist())) > 1
    trainer.model.eval()
    with torch.no_grad():
        loss, _ = trainer._pairwise_step(trainer.model, batch)
        out = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        half = len(rows)
        per_row = -F.logsigmoid(out[:half] - out[half:] - batch["margin"])
        assert loss.item() == pytest.approx((per_row * weights).sum().item() / weights.sum().item(), rel=1e-5)
        assert loss.item() != pytest.approx(per_row.mean().item(), rel=1e-5)
        # a weight-0 row does not count, whatever its margin: same loss as the batch without it
        zeroed = dict(batch, weight=batch["weight"].clone(), margin=batch["margin"].clone())
        zeroed["weight"][0], zeroed["margin"][0] = 0.0, 5.0
        without = trainer.loop.collate_fn(rows[1:])
        assert trainer._pairwise_step(trainer.model, zeroed)[0].item() == pytest.approx(
            trainer._pairwise_step(trainer.model, without)[0].item(), rel=1e-5)
