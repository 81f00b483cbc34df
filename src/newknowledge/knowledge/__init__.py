"""What the model knows: SliCK's four categories and their estimators (paper Sec. 3), and P(True),
the baseline of Sec. 6."""
