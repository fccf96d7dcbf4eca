"""Validation health: how far one recipe's numbers move between seeds, and whether valid and
test agree across a dataset's runs. Tells an engineer which differences are noise."""
