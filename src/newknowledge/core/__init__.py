"""Shared by every stage: the stage configurations and profiles, every text format, the artifact store,
progress bars, the table check and exact match."""
