"""Human feedback: calibrate annotators and turn their ratings into training data.

    pairs, cal = calibrated_pairs(rows)      # rows: prompt, response, annotator, score
    cal.offsets                              # each annotator's estimated bias

``calibration`` fits ``rating = score[item] + offset[annotator] + noise`` (optionally a
per-annotator scale) by alternating least squares; ``pairs`` turns calibrated scores into
preference pairs within each prompt. The collection side (store, web app) builds on these.
"""

from .calibration import Calibration, calibrate_ratings
from .pairs import calibrated_pairs, pairs_from_scores

__all__ = ["Calibration", "calibrate_ratings", "calibrated_pairs", "pairs_from_scores"]
