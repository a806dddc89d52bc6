"""kpemu's benchmarks (`make bench`): every figure is a ratio of two things measured in the
same run, so a noisy shared machine moves both sides alike.  Never timed tests."""
