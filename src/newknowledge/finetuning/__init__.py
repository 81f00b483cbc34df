"""Fine-tuning (paper Sec. 4-5, App. K): the data set variants, the per-run and grouped training paths
and the run store they write."""
