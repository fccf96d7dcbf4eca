"""The curation advisor: per class, what to do next (collect, relabel, prune, sharpen a
confused pair), and the prune experiment that tests one of those suggestions."""
