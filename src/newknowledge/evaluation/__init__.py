"""From records to verdicts: accuracies and stops, the linear model, significance tests, the paper's
reference numbers and the checks that compare them."""
