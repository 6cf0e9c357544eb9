"""What a trained model owes its users: data checks, subgroup metrics, calibration, shift,
explanations, energy and carbon. Attached through callbacks and functions; the core never imports it."""
