"""Human feedback: collect judgements in a web app, measure and calibrate annotators, export training data.

    rlhfkit feedback serve                           # the web app (creates an admin on first start)
    data = service.collect(session, "helpful")      # every judgement as plain records
    print(quality.report_markdown(data))             # agreement, Dawid-Skene reliability, bias, gold accuracy
    export.export(data, "data/helpful")              # pairs.jsonl (margin, weight), ratings.jsonl, rankings.jsonl

Layers inside: ``store`` (SQLAlchemy models) + ``db`` (engines, Alembic migrations) ->
``service`` (every read and write, validated and transactional) -> ``app`` (FastAPI pages and
JSON API) and ``cli``; ``records`` (plain judgement records) -> ``quality``, ``dawid_skene``,
``calibration``, ``pairs``, ``export``; ``active`` (uncertainty-first queue) and
``human_reward`` (a PPO reward function backed by annotators). Heavy modules are imported
where used, so ``import rlhfkit`` does not pull in the web stack.
"""

from .calibration import Calibration, calibrate_ratings
from .pairs import calibrated_pairs, pairs_from_scores
from .records import FeedbackData, PairObs, RankingObs, RatingObs, ResponseRec

__all__ = ["Calibration", "FeedbackData", "PairObs", "RankingObs", "RatingObs", "ResponseRec", "calibrate_ratings",
           "calibrated_pairs", "pairs_from_scores"]
