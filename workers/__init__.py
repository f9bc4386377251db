"""Everything that touches weights: merge kernels, checkpoint IO, materialisation, scoring."""
