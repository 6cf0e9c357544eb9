"""What a trained model owes its users: data checks, subgroup metrics, calibration, shift,
explanations, energy and carbon. Attached through callbacks and functions; the core never
imports it.

    report = check_contamination(train_x, test_x)   # before training: leaks, as pairs
    build_report("runs/mlp-...")                     # after: card.json + card.html
    card(model, (x_test, y_test), groups={"sex": sex}, out="card")  # any model, any data
"""

from layerwise.audit.calibration import calibration_error, fit_temperature, nll, softmax
from layerwise.audit.card_html import render_html, write_card
from layerwise.audit.cost import CostCallback, count_flops, emissions_record, format_table, profile_model
from layerwise.audit.data_checks import (
    NEAR_THRESHOLD,
    ContaminationError,
    ContaminationReport,
    check_contamination,
    class_balance,
    content_hashes,
    cross_val_probs,
    drift_report,
    find_duplicates,
    find_label_issues,
    ks_statistic,
    nearest_distances,
    softmax_regression,
)
from layerwise.audit.disaggregate import MIN_CELL, disaggregate, newcombe_interval
from layerwise.audit.explain import (
    attention_maps,
    grad_cam,
    integrated_gradients,
    saliency,
    spearman,
)
from layerwise.audit.groups import (
    bootstrap_ci,
    demographic_parity_difference,
    equalized_odds_difference,
    group_metrics,
    per_class_metrics,
    wilson_interval,
)
from layerwise.audit.model_card import card
from layerwise.audit.people import headline, people_section
from layerwise.audit.report import (
    build_report,
    check_split_contamination,
    load_run,
    refuse_contamination,
    split_arrays,
    write_model_card,
)
from layerwise.audit.shift import (
    CORRUPTIONS,
    auroc,
    corrupt,
    corruption_table,
    energy_score,
    max_softmax,
    uniform_noise_like,
)

__all__ = [
    "CostCallback", "count_flops", "emissions_record", "format_table", "profile_model",
    "CORRUPTIONS",
    "MIN_CELL",
    "NEAR_THRESHOLD",
    "ContaminationError",
    "ContaminationReport",
    "attention_maps",
    "auroc",
    "bootstrap_ci",
    "build_report",
    "calibration_error",
    "card",
    "check_contamination",
    "check_split_contamination",
    "class_balance",
    "content_hashes",
    "corrupt",
    "corruption_table",
    "cross_val_probs",
    "demographic_parity_difference",
    "disaggregate",
    "drift_report",
    "energy_score",
    "equalized_odds_difference",
    "find_duplicates",
    "find_label_issues",
    "fit_temperature",
    "grad_cam",
    "group_metrics",
    "headline",
    "integrated_gradients",
    "ks_statistic",
    "load_run",
    "max_softmax",
    "nearest_distances",
    "newcombe_interval",
    "nll",
    "people_section",
    "per_class_metrics",
    "refuse_contamination",
    "render_html",
    "saliency",
    "softmax",
    "softmax_regression",
    "spearman",
    "split_arrays",
    "uniform_noise_like",
    "wilson_interval",
    "write_card",
    "write_model_card",
]
