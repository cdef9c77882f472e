"""Local HTTP sandboxes that imitate third-party APIs for tests."""
