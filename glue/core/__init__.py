"""Pure shared types and decisions: every process of renku-notebooks may import these."""
