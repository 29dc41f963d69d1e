"""The semantic rig: named animation controls -> FLAME parameters (theta(c) = B c + g)."""
