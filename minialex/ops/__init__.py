"""The ops, one family per file: NumPy pair and CUDA pair side by side (see STYLE.md)."""
