"""Recommender uploads (interactions, items): parsing, Great Expectations validation, features and training samples."""
