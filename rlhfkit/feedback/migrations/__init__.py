"""Alembic migrations of the feedback store (run by ``rlhfkit.feedback.db.migrate``).

A package only so that wheels ship it; ``env.py`` is executed by Alembic, never imported.
"""
