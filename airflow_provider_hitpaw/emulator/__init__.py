"""A local stand-in for HitPaw's API, for tests and demos that must not spend coins."""
