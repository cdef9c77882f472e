"""Strava: athletes as dynamic partitions, activities synced full or incrementally."""
