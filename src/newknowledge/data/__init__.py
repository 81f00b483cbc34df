"""The facts: the synthetic, ENTITYQUESTIONS-format controlled world and the loader of real
ENTITYQUESTIONS folders (paper Sec. 2)."""
