"""What runs in the user's session or pod: git steps, git token component, kernels."""
