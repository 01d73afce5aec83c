"""Moving registry content and files between repositories: subsets for jobs, merges of their outcomes."""
