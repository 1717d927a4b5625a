"""What is said about a result: cause hints (and the reruns that verify them), the terminal and JSON
report, the HTML report, and the repro bundle for one failing layer."""
