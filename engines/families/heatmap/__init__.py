"""heatmap."""
